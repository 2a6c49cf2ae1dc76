"""Temporal's buffered metrics reach OpenTelemetry by name and label values (`BufferExporter`).

The case that broke the SDK's own drain: several workflow runs each create the same gauge (a run's meter
is its own), and set it with their labels on every call. Every run's series must be exported, once each,
with its last value.
"""

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig

from cidsync.telemetry.buffer_export import BufferExporter


def exported(reader: InMemoryMetricReader) -> dict[str, dict[tuple[tuple[str, object], ...], float]]:
    data = reader.get_metrics_data()
    found: dict[str, dict[tuple[tuple[str, object], ...], float]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = {k: v for k, v in (point.attributes or {}).items() if k != "service_name"}  # Core's
                    labels = tuple(sorted(attributes.items()))
                    found.setdefault(metric.name, {})[labels] = getattr(point, "value", getattr(point, "count", 0))
    return found


def test_a_gauge_made_by_many_runs_is_one_series_per_label_set_with_its_last_value() -> None:
    buffer = MetricBuffer(1_000)
    meter = Runtime(telemetry=TelemetryConfig(metrics=buffer)).metric_meter
    reader = InMemoryMetricReader()
    exporter = BufferExporter(buffer, MeterProvider(metric_readers=[reader]))
    for value in (5.0, 3.0, 0.0):  # three polls of three followers, each making its gauge anew
        for key_type in ("CPF", "EVP", "PHONE"):
            meter.create_gauge_float("follower_suspects").set(value + len(key_type), {"key_type": key_type})
            meter.create_counter("follower_events").add(2, {"key_type": key_type})
        exporter.drain()
    found = exported(reader)
    assert found["follower_suspects"] == {
        (("key_type", "CPF"),): 3.0,
        (("key_type", "EVP"),): 3.0,
        (("key_type", "PHONE"),): 5.0,
    }
    assert found["follower_events"] == {(("key_type", k),): 6 for k in ("CPF", "EVP", "PHONE")}
