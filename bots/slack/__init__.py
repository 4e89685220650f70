"""Slack approvals (issue 4): requests as Slack messages, decisions from buttons and a reason modal."""
