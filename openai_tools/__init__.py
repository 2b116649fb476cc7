"""The API service: OpenAI-compatible tools, the seeds' REST and streaming API, JWT auth."""
