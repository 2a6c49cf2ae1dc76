"""starters: outside input (Pulsar entry events, CLI calls, schedules) turned into workflow starts."""
