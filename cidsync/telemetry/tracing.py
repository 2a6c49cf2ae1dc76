"""One trace per event, from core's publish to the Redis apply, configured by the standard `OTEL_*` variables.

Tracing is off unless `OTEL_TRACES_EXPORTER` names an exporter. The OpenTelemetry specification makes
`otlp` the default when the variable is unset, but an exporter that retries against a collector nobody
runs would cost every process CPU and log noise, so here unset means off (README "Operations").

- `OTEL_TRACES_EXPORTER`: `otlp`, `console` or `none` (comma-separated for several);
- `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` (default) or
  `grpc`;
- the endpoint, headers, timeout, certificates, sampler, batch processor and resource come from the
  variables the SDK and its exporters read themselves (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER`,
  `OTEL_BSP_*`, `OTEL_RESOURCE_ATTRIBUTES`, ...); `OTEL_SERVICE_NAME` defaults to the role's name.

Context crosses process boundaries the W3C way: `traceparent` (and `tracestate`) in Pulsar message
properties, in gRPC metadata towards the Bridge, and in Temporal headers through the SDK's
`TracingInterceptor` (chosen over the newer `OpenTelemetryPlugin`, README "Operations" says why).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, Span, SpanKind

from cidsync.errors import InvalidInput, Problem

EXPORTER_VARIABLE = "OTEL_TRACES_EXPORTER"
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
PROTOCOLS = ("http/protobuf", "grpc")

_tracer = trace.get_tracer("cidsync")
_provider: TracerProvider | None = None


def enabled() -> bool:
    """Whether this process traces: callers skip building spans and carriers entirely when it does not."""
    return _provider is not None


def _protocol(environ: Mapping[str, str]) -> str:
    for variable in PROTOCOL_VARIABLES:
        if value := environ.get(variable, "").strip():
            if value not in PROTOCOLS:
                raise InvalidInput("environment", [Problem(variable, f"must be one of {', '.join(PROTOCOLS)}")])
            return value
    return "http/protobuf"


def _exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    names = [n.strip() for n in environ.get(EXPORTER_VARIABLE, "").split(",") if n.strip()]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "none":
            continue
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            if _protocol(environ) == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

                exporters.append(GrpcExporter())
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

                exporters.append(HttpExporter())
        else:
            raise InvalidInput("environment", [Problem(EXPORTER_VARIABLE, "must be otlp, console or none")])
    return exporters


def provider_from(role: str, environ: Mapping[str, str]) -> TracerProvider | None:
    """The tracer provider `environ` asks for, or None when it names no exporter. A bad setting raises
    InvalidInput naming the variable."""
    exporters = _exporters(environ)
    if not exporters:
        return None
    service = environ.get("OTEL_SERVICE_NAME", "").strip() or role
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def setup(role: str, environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Install this process's tracer provider from the environment (once, before anything connects);
    None and tracing off when the environment names no exporter."""
    global _provider
    provider = provider_from(role, os.environ if environ is None else environ)
    if provider is not None:
        trace.set_tracer_provider(provider)
        _provider = provider
    return provider


def shutdown() -> None:
    """Flush what is buffered: a role that stops must not drop the spans of its last events."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def temporal_interceptors() -> list[Any]:
    """The SDK's tracing interceptor for a client (its workers inherit it), or nothing when off."""
    if not enabled():
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


def inject(carrier: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current context's `traceparent` into message properties or gRPC metadata."""
    if enabled():
        propagate.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str]) -> otel_context.Context:
    return propagate.extract(carrier)


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int] | None = None,
    parent: otel_context.Context | None = None,
    links: Sequence[Link] = (),
) -> Iterator[Span | None]:
    """A span around a step, or nothing at all when tracing is off (no context switch, no allocation)."""
    if not enabled():
        yield None
        return
    with _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes, links=links) as s:
        yield s


def start_span(
    name: str, *, kind: SpanKind, attributes: Mapping[str, str | int], parent: otel_context.Context | None = None
) -> Span | None:
    """A span its caller ends itself (from a callback, possibly on another thread), or None when off."""
    if not enabled():
        return None
    return _tracer.start_span(name, context=parent, kind=kind, attributes=attributes)


def inject_span(span: Span | None, carrier: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write `span`'s context into `carrier`, so what receives it continues this trace."""
    if span is not None:
        propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def messaging_attributes(operation: str, destination: str) -> dict[str, str | int]:
    """OpenTelemetry's messaging attributes of a Pulsar send or process span."""
    return {
        "messaging.system": "pulsar",
        "messaging.operation.type": operation,
        "messaging.destination.name": destination,
    }


def event_attributes(event_id: str, event_type: str, entry_id: str, sequence: int) -> dict[str, str | int]:
    """What every span about one entry event carries: ids only, never the entry (docs/design.md §5)."""
    return {
        "cidsync.event_id": event_id,
        "cidsync.event_type": event_type,
        "cidsync.entry_id": entry_id,
        "cidsync.sequence": sequence,
    }
