"""workers: the clients, runtime and Temporal workers built and shut down in order."""
