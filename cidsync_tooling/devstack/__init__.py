"""The embedded stack: Temporal dev server, pulsar-lite and redis-server as real local processes."""
