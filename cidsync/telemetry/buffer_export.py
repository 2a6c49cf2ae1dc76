"""Temporal's buffered metrics (SDK, Core and `workflow.metric_meter()`) into our OpenTelemetry provider.

The SDK ships a drain for this (`temporalio.contrib.opentelemetry.MetricsExporter`), but it finds an
instrument, and a gauge's series, by the `id()` of Core's metric and attribute objects. A workflow makes
those anew in every run (its meter is per run), which breaks both:
- OpenTelemetry keeps the first instrument of a name and ignores the callbacks of later ones, so of five
  followers' `cidsync_follower_suspects` gauges only the first follower's ever reached `/metrics`;
- a gauge set with its labels in each call became a new series per call, all with the same labels;
- and `id()` values are reused once an object is gone, so a cache by `id()` can hand a new metric an old
  one's instrument or labels.

Here an instrument is found by its name and kind, and a gauge's series by its label values; nothing is
cached by `id()`. A gauge's series keeps its last value until the process ends, also after the run that
set it has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import timedelta
from typing import Any

from opentelemetry.metrics import CallbackOptions, Counter, Histogram, MeterProvider, Observation
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_GAUGE,
    BUFFERED_METRIC_KIND_HISTOGRAM,
    BufferedMetricUpdate,
    MetricBuffer,
)

logger = logging.getLogger(__name__)

Labels = tuple[tuple[str, Any], ...]


class _Gauge:
    """One gauge's series, by label values; read by OpenTelemetry's collection thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.series: dict[Labels, tuple[Mapping[str, Any], float]] = {}

    def set(self, attributes: Mapping[str, Any], value: float) -> None:
        with self.lock:
            self.series[tuple(sorted(attributes.items()))] = (attributes, value)

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self.lock:
            return [Observation(value, attributes=dict(attributes)) for attributes, value in self.series.values()]


class BufferExporter:
    """Drains `buffer` into `provider` every `poll_interval` while entered, and once more on exit."""

    def __init__(
        self, buffer: MetricBuffer, provider: MeterProvider, poll_interval: timedelta = timedelta(seconds=1)
    ) -> None:
        self._buffer = buffer
        self._meter = provider.get_meter("temporalio")
        self._poll_interval = poll_interval.total_seconds()
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        self._gauges: dict[str, _Gauge] = {}

    def drain(self) -> None:
        for update in self._buffer.retrieve_updates():
            try:
                self._apply(update)
            except Exception:  # one bad update must not stop the others (nor the process)
                logger.exception("a buffered Temporal metric (%s) could not be exported", update.metric.name)

    def _apply(self, update: BufferedMetricUpdate) -> None:
        metric = update.metric
        name, unit, description = metric.name, metric.unit or "", metric.description or ""
        attributes = dict(update.attributes)
        if metric.kind == BUFFERED_METRIC_KIND_COUNTER:
            if name not in self._counters:
                self._counters[name] = self._meter.create_counter(name, unit=unit, description=description)
            self._counters[name].add(update.value, attributes=attributes)
        elif metric.kind == BUFFERED_METRIC_KIND_HISTOGRAM:
            if name not in self._histograms:
                self._histograms[name] = self._meter.create_histogram(name, unit=unit, description=description)
            self._histograms[name].record(update.value, attributes=attributes)
        elif metric.kind == BUFFERED_METRIC_KIND_GAUGE:
            if name not in self._gauges:
                gauge = self._gauges[name] = _Gauge()
                self._meter.create_observable_gauge(name, callbacks=[gauge.observe], unit=unit, description=description)
            self._gauges[name].set(attributes, update.value)
        else:
            raise ValueError(f"unknown kind of buffered metric: {metric.kind}")

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._poll_interval)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[BufferExporter]:
        stop = asyncio.Event()
        task = asyncio.ensure_future(self._run(stop))
        try:
            yield self
        finally:
            stop.set()
            await task
            self.drain()  # what was recorded right before the end
