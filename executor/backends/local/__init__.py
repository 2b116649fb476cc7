"""Local sandboxes isolated with bubblewrap: the embedded default backend."""
