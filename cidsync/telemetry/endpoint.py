"""One HTTP endpoint per process: `/metrics` (Temporal's and ours), `/healthz` and `/readyz`.

Metrics go through OpenTelemetry's SDK: our instruments are created on the global meter provider, and
Temporal's own (the SDK and Core metrics, and what workflows record with `workflow.metric_meter()`) reach
the same provider through a `MetricBuffer` drained by `BufferExporter` (`buffer_export.py`, which says
why not the SDK's `MetricsExporter`). One Prometheus reader
serves them all, so a process has one scrape target, not Temporal's plus ours.

Health is answered from state, never by calling out during a request: the event loop beats once a second
(`/healthz` fails when it has not for `STALL_AFTER`, i.e. the process is stuck, not merely slow), and the
readiness probes run on the loop every `PROBE_EVERY` (`/readyz` fails while a required dependency does not
answer). The server runs on its own thread, so a scrape still answers while the loop is busy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from prometheus_client import CollectorRegistry, make_wsgi_app
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig

from cidsync.errors import InvalidInput, Problem
from cidsync.telemetry.buffer_export import BufferExporter

logger = logging.getLogger(__name__)

BEAT_EVERY = 1.0
STALL_AFTER = 15.0
PROBE_EVERY = 5.0
PROBE_TIMEOUT = 3.0

Probe = Callable[[], Awaitable[object]]


def parse_bind(bind: str, variable: str = "CIDSYNC_METRICS_BIND") -> tuple[str, int]:
    """`host:port` (port 0: any free one); an error naming the setting otherwise."""
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise InvalidInput("settings", [Problem(variable, "must be HOST:PORT, e.g. 127.0.0.1:9464")])
    return host.strip("[]"), int(port)


@dataclass
class _Check:
    probe: Probe
    required: bool
    ok: bool = False
    detail: str = "not checked yet"


@dataclass
class Health:
    """Liveness and readiness as the endpoint reports them; the role adds a probe per dependency."""

    checks: dict[str, _Check] = field(default_factory=dict)
    last_beat: float = field(default_factory=time.monotonic)
    probe_now: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, probe: Probe, *, required: bool = True) -> None:
        """`probe` answers or raises; an optional dependency is reported without failing `/readyz`."""
        with self.lock:
            self.checks[name] = _Check(probe, required)
            self.probe_now = True  # a new dependency is reported at the next beat, not a probe period later

    def alive(self) -> tuple[bool, dict[str, Any]]:
        stalled = time.monotonic() - self.last_beat
        return stalled < STALL_AFTER, {"event_loop_last_beat_seconds_ago": round(stalled, 1)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        with self.lock:
            checks = dict(self.checks)
        report = {name: {"ok": c.ok, "required": c.required, "detail": c.detail} for name, c in checks.items()}
        ready = bool(checks) and all(c.ok for c in checks.values() if c.required) and self.alive()[0]
        return ready, report

    def observe(self, _: CallbackOptions) -> list[Observation]:
        """`cidsync_dependency_up`: each probe's last answer, for the alerts (a readiness probe's failures
        restart nothing and reach no dashboard; this does)."""
        with self.lock:
            checks = list(self.checks.items())
        return [Observation(int(c.ok), {"dependency": name, "required": str(c.required).lower()}) for name, c in checks]

    async def _probe(self, name: str, check: _Check) -> None:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await check.probe()
            check.ok, check.detail = True, "ok"
        except TimeoutError:
            if check.ok:
                logger.warning("%s stopped answering", name)
            check.ok, check.detail = False, f"no answer within {PROBE_TIMEOUT:g} s"
        except Exception as error:  # any failure means not ready; the detail says which (never a secret)
            if check.ok:
                logger.warning("%s stopped answering: %s", name, type(error).__name__)
            check.ok, check.detail = False, f"{type(error).__name__}: {str(error)[:200]}"

    async def run(self) -> None:
        """Beat and probe until cancelled."""
        next_probe = 0.0
        while True:
            self.last_beat = time.monotonic()
            if self.last_beat >= next_probe or self.probe_now:
                with self.lock:
                    checks = list(self.checks.items())
                    self.probe_now = False
                await asyncio.gather(*(self._probe(name, check) for name, check in checks))
                next_probe = time.monotonic() + PROBE_EVERY
            await asyncio.sleep(BEAT_EVERY)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds are not news
        pass


def _app(registry: CollectorRegistry, health: Health) -> Callable[..., Iterable[bytes]]:
    metrics_app = make_wsgi_app(registry)

    def answer(start: Callable[..., Any], ok: bool, body: dict[str, Any]) -> list[bytes]:
        payload = json.dumps({"ok": ok, **body}).encode()
        start(
            "200 OK" if ok else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    def app(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            result: Iterable[bytes] = metrics_app(environ, start)
            return result
        if path == "/healthz":
            alive, detail = health.alive()
            return answer(start, alive, detail)
        if path == "/readyz":
            ready, checks = health.ready()
            return answer(start, ready, {"checks": checks})
        start("404 Not Found", [("Content-Type", "text/plain")])
        return [b"/metrics, /healthz or /readyz\n"]

    return app


@dataclass
class Observability:
    """What a role gets while its endpoint runs: the health to add probes to, the Temporal runtime to
    connect with (None without an endpoint: Temporal's metrics then go nowhere), and the bound URL."""

    health: Health
    runtime: Runtime | None
    url: str | None


@asynccontextmanager
async def serving(role: str, bind: str | None) -> AsyncIterator[Observability]:
    """Run `role`'s endpoint on `bind` (None: no endpoint, no metrics kept) for the duration."""
    health = Health()
    if bind is None:
        yield Observability(health, None, None)
        return
    host, port = parse_bind(bind)
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({SERVICE_NAME: role}))
    metrics.set_meter_provider(provider)
    provider.get_meter("cidsync").create_observable_gauge(
        "cidsync.dependency.up",
        callbacks=[health.observe],
        description="1 while a dependency answered the last readiness probe, by dependency and whether required",
    )
    buffer = MetricBuffer(10_000)  # drained every second: many times what a busy worker emits in one
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    server = make_server(host, port, _app(registry, health), server_class=_ThreadingServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-endpoint", daemon=True)
    thread.start()
    url = f"http://{host}:{server.server_port}"
    beating = asyncio.ensure_future(health.run())
    try:
        async with BufferExporter(buffer, provider, poll_interval=timedelta(seconds=1)).running():
            yield Observability(health, runtime, url)
    finally:
        beating.cancel()
        server.shutdown()
        server.server_close()
        provider.shutdown()
