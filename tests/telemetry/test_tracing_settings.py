"""Tracing is configured by the standard OTEL_* variables alone, and a bad one is named in the error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from cidsync.errors import InvalidInput
from cidsync.telemetry.tracing import provider_from


def exporters_of(provider: TracerProvider) -> list[object]:
    processors = provider._active_span_processor._span_processors  # the SDK keeps no public list
    return [p._batch_processor._exporter for p in processors]  # type: ignore[attr-defined]


@pytest.mark.parametrize("environ", [{}, {"OTEL_TRACES_EXPORTER": "none"}, {"OTEL_TRACES_EXPORTER": " "}])
def test_no_exporter_named_means_no_tracing(environ: dict[str, str]) -> None:
    assert provider_from("cidsync-worker", environ) is None


@pytest.mark.parametrize(
    ("environ", "exporter"),
    [
        ({"OTEL_TRACES_EXPORTER": "otlp"}, HttpExporter),  # the specification's default protocol
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, GrpcExporter),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            HttpExporter,
        ),  # the signal's own wins
        ({"OTEL_TRACES_EXPORTER": "console"}, ConsoleSpanExporter),
    ],
)
def test_the_exporter_and_protocol_come_from_the_standard_variables(
    environ: dict[str, str], exporter: type[object]
) -> None:
    provider = provider_from("cidsync-worker", environ)
    assert provider is not None
    assert [type(e) for e in exporters_of(provider)] == [exporter]
    provider.shutdown()


def test_the_service_name_is_the_role_unless_otel_service_name_says_otherwise() -> None:
    role = provider_from("cidsync-starter", {"OTEL_TRACES_EXPORTER": "console"})
    named = provider_from("cidsync-starter", {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "ingest-a"})
    assert role is not None
    assert named is not None
    assert role.resource.attributes["service.name"] == "cidsync-starter"
    assert named.resource.attributes["service.name"] == "ingest-a"


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
    ],
)
def test_a_bad_setting_is_an_error_that_names_the_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        provider_from("cidsync-worker", environ)
    assert raised.value.problems[0].field == variable


def test_every_command_refuses_a_bad_setting_before_it_connects() -> None:
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "jaeger", "CIDSYNC_REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run(
        [sys.executable, "-m", "cidsync", "vsync"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "OTEL_TRACES_EXPORTER: must be otlp, console or none" in done.stderr
