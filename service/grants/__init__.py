"""Grants: agents' bearer tokens (only their sha256 is stored)."""
