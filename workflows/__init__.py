"""workflows: the durable lifecycles, one workflow a module; deterministic code only (docs/development.md)."""
