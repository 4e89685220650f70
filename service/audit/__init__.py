"""Audit history: one record per tools/call, written off the call's path."""
