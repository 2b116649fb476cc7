"""code-exec: the command line that starts each role (executor, API, MCP)."""
