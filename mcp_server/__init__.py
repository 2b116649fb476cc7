"""The MCP server: run_code, open_session and close_session over stdio and streamable HTTP."""
