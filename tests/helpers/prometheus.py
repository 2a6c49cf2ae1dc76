"""A real Prometheus (Debian's, fetched by `make install`) scraping the given targets and evaluating rules.

Scrapes and evaluates every second, so that a test sees a rule fire in seconds; the rules are the shipped
ones, their `for:` holding times shortened by the caller (the expressions are what is tested).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from cidsync_tooling.debian import tool
from cidsync_tooling.devstack.processes import free_port
from tests.helpers.eventually import eventually_sync

READY_WITHIN = 60.0


def with_short_holds(rules: str, hold: str) -> str:
    """The rules file with every alert's `for:` set to `hold`."""
    return re.sub(r"^(\s+)for: \S+$", rf"\g<1>for: {hold}", rules, flags=re.MULTILINE)


@dataclass(frozen=True)
class Prometheus:
    url: str

    def _get(self, path: str, **params: str) -> Any:
        answer = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        answer.raise_for_status()
        body = answer.json()
        assert body["status"] == "success", body
        return body["data"]

    def metric_names(self) -> set[str]:
        return set(self._get("/api/v1/label/__name__/values"))

    def targets(self) -> dict[str, str]:
        """Each active target's job: its health (`up`, `down`, `unknown`)."""
        return {t["labels"]["job"]: t["health"] for t in self._get("/api/v1/targets")["activeTargets"]}

    def alerts(self) -> list[dict[str, Any]]:
        """The pending and firing alerts, each with its labels and state."""
        found: list[dict[str, Any]] = self._get("/api/v1/alerts")["alerts"]
        return found

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._get("/api/v1/query", query=expr)["result"]
        return result


@contextmanager
def prometheus(root: Path, jobs: Mapping[str, str], rule_files: Mapping[str, str]) -> Iterator[Prometheus]:
    """Prometheus in `root`: `jobs` maps a job name to one target `host:port`; `rule_files` a file name to
    its text. Stopped (SIGTERM, then killed) on exit; its log is `root/prometheus.log`."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in rule_files.items():
        (root / name).write_text(text)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(root / name) for name in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in jobs.items()
        ],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (root / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            str(tool("prometheus")),
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, (root / "prometheus.log").read_text()[-3000:]  # it exited: say why
        try:
            return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        eventually_sync(ready, "Prometheus ready", timeout=READY_WITHIN, every=0.2)
        yield Prometheus(url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
