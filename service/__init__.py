"""holdgate: a human-in-the-loop approval gateway for MCP tool calls."""

__version__ = "0.1.0"
