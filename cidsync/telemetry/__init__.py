"""Traces, metrics, health and logs for every role (README "Operations").

Everything here is configured by the environment only: the standard `OTEL_*` variables for tracing, and
the role's metrics address for Prometheus. Nothing here may carry personal data (docs/design.md §5): spans
and metric labels hold ids, key ids, participants and key types, never an entry's fields.
"""
