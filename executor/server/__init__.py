"""The executor's own HTTP API (`code-exec executor`): an Executor served to the API host."""
