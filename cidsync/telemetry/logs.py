"""Plain-text logs for people, JSON lines for log pipelines (`CIDSYNC_LOG_FORMAT=json`).

A JSON line carries what ties it to the rest of the telemetry: the trace and span ids of the current span,
the workflow id and run id (from the SDK's workflow and activity loggers, which attach them to each record),
the event id and the counters where the code passes them. Messages never hold personal data (docs/design.md §5);
nothing here adds any.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from cidsync.errors import InvalidInput, Problem

FORMAT_VARIABLE = "CIDSYNC_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Extras worth a field of their own when present on a record.
_EXTRAS = ("event_id", "counters", "participant", "key_type")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = format(span.trace_id, "032x")
            line["span_id"] = format(span.span_id, "016x")
        for source in ("temporal_workflow", "temporal_activity"):  # set by the SDK's loggers
            details = getattr(record, source, None)
            if isinstance(details, Mapping):
                for name in ("workflow_id", "run_id", "workflow_type", "activity_type", "attempt"):
                    if name in details:
                        line[name] = details[name]
        for name in _EXTRAS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str, environ: Mapping[str, str] | None = None) -> None:
    """The root logger for a long-running role; a bad `CIDSYNC_LOG_FORMAT` is an error naming it."""
    environ = os.environ if environ is None else environ
    kind = environ.get(FORMAT_VARIABLE, "text").strip().lower() or "text"
    if kind not in ("text", "json"):
        raise InvalidInput("environment", [Problem(FORMAT_VARIABLE, "must be text or json")])
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("pulsar").setLevel(logging.WARNING)
    if level.lower() != "debug":  # one line per DICT call: bridge serve's metrics and traces count them
        logging.getLogger("httpx").setLevel(logging.WARNING)
