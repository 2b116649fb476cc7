"""The executor: pools of sandboxes, sessions, limits; reached through an ExecutorClient."""
