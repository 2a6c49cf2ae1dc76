"""JSON log lines carry what ties them to the rest: the run, the trace, the event; a bad format is named."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from cidsync.errors import InvalidInput
from cidsync.telemetry.logs import JsonFormatter, configure_logging


def record(**extra: object) -> logging.LogRecord:
    made = logging.LogRecord("cidsync.test", logging.WARNING, __file__, 1, "applied %s", ("x",), None)
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_a_line_names_the_run_and_the_trace_it_belongs_to() -> None:
    tracer = TracerProvider().get_tracer("test")  # a provider of its own: the global one is left alone
    with tracer.start_as_current_span("apply") as span:
        line = json.loads(
            JsonFormatter().format(
                record(
                    temporal_activity={
                        "workflow_id": "cid-created-1-2",
                        "run_id": "r-1",
                        "activity_type": "apply_cid_change",
                    },
                    event_id="e-1",
                )
            )
        )
    assert line["message"] == "applied x"
    assert (line["level"], line["logger"]) == ("WARNING", "cidsync.test")
    assert (line["workflow_id"], line["run_id"]) == ("cid-created-1-2", "r-1")
    assert line["activity_type"] == "apply_cid_change"
    assert line["event_id"] == "e-1"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_a_line_outside_any_span_or_run_has_neither() -> None:
    line = json.loads(JsonFormatter().format(record()))
    assert "trace_id" not in line
    assert "workflow_id" not in line


def test_a_bad_log_format_is_named() -> None:
    with pytest.raises(InvalidInput) as raised:
        configure_logging("info", {"CIDSYNC_LOG_FORMAT": "xml"})
    assert raised.value.problems[0].field == "CIDSYNC_LOG_FORMAT"
