"""`make ui-check`: the Web UI checked in a real browser (tooling, not deployed)."""
