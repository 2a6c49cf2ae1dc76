"""`make bench`: ingestion against its ceilings, measured in the same run, and written to bench/RESULTS.md.

Each round brings up fresh stacks (their own Temporal database), measures the ceilings first and then ours
on the same servers (bench/ceilings.py, bench/ours.py), and checks every pair's VSync against an in-memory
computation after every run. Three rounds: each figure is the median, with min and max; each ratio is
taken within its round. Then a profiled drain (py-spy on the starter and the worker) that is not counted.

Run: .venv/bin/python -m bench.run [--rounds 3] [--events 20000] [--per-event-events 1000] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bench import ceilings
from bench.common import Sampler, fresh_stack, history, spread
from bench.ours import drain, paced_sends, publish, steady
from cidsync.topics import Topics
from cidsync_tooling.devstack.processes import temporal_binary

RESULTS = Path(__file__).parent / "RESULTS.md"
START, END = "<!-- make bench: start -->", "<!-- make bench: end -->"
MB = 1024 * 1024


def batch_round(root: Path, events_count: int, seed: int, replicas: int = 1) -> dict[str, Any]:
    with fresh_stack(root, replicas) as stack, Sampler(stack.pids()) as sampler:

        async def measure() -> dict[str, Any]:
            events, expected = history(events_count, ["10000001", "10000002"], seed)
            raw_producer = await asyncio.to_thread(ceilings.raw_producer, stack.pulsar_url, events)
            producer = (await publish(stack, events)).msgs_per_s  # also fills the backlog the starter drains
            topics = Topics(namespace=stack.namespace).entry_topics()
            raw_ingest = await asyncio.to_thread(
                ceilings.raw_pulsar_to_redis, stack.pulsar_url, stack.redis_url, topics, events_count
            )
            drained = await drain(stack, sampler, events, expected, "batch")
            at_1000 = await steady(stack, 1000, 10, ["20000001", "20000002"], seed + 1)
            at_3000 = await steady(stack, 3000, 10, ["30000001", "30000002"], seed + 2)
            sends = await paced_sends(stack, 1000, 10, ["60000001", "60000002"], seed + 3)
            return {
                "raw_producer": raw_producer,
                "producer": producer,
                "producer_send_p99_ms_at_1000": sends.send_p99_ms,
                "producer_send_p99_ms_beside_watcher": at_1000.send_p99_ms,
                "raw_ingest": raw_ingest,
                "batch": drained.events_per_s,
                "batch_cpu_us": drained.cpu_us_per_event,
                "p50_ms_at_1000": at_1000.p50_ms,
                "p99_ms_at_1000": at_1000.p99_ms,
                "p50_ms_at_3000": at_3000.p50_ms,
                "p99_ms_at_3000": at_3000.p99_ms,
                "exact": drained.exact and at_1000.exact and at_3000.exact and sends.exact,
            }

        result = asyncio.run(measure())
    result["rss_mb"] = peak_rss_mb(sampler)
    return result


def per_event_round(root: Path, events_count: int, seed: int, replicas: int = 1) -> dict[str, Any]:
    with fresh_stack(root, replicas) as stack, Sampler(stack.pids()) as sampler:

        async def measure() -> dict[str, Any]:
            # The no-op ceiling before and after ours, on the same server, averaged: the server's pace drifts
            # within a round by up to ~15% (seen in A/B runs), and bracketing cancels a steady drift.
            before = await ceilings.noop_workflows(stack.temporal_address, events_count, root / "noop-worker.log")
            events, expected = history(events_count, ["40000001", "40000002"], seed)
            await publish(stack, events)
            drained = await drain(stack, sampler, events, expected, "per-event")
            after = await ceilings.noop_workflows(stack.temporal_address, events_count, root / "noop-worker-2.log")
            return {
                "noop": (before + after) / 2,
                "noop_before": before,
                "noop_after": after,
                "per_event": drained.events_per_s,
                "exact": drained.exact,
                "per_event_cpu_us": drained.cpu_us_per_event,
            }

        result = asyncio.run(measure())
    result["rss_mb"] = peak_rss_mb(sampler)
    return result


def peak_rss_mb(sampler: Sampler) -> dict[str, float]:
    """The worker's and the starter's peak RSS (the highest of their replicas)."""
    return {
        role: max((rss for name, rss in sampler.peak_rss.items() if name.split("-")[0] == role), default=0) / MB
        for role in ("worker", "starter")
    }


def profiled_drain(root: Path, events_count: int, seconds: int) -> dict[str, list[tuple[float, str]]]:
    """py-spy on the starter and the worker while they drain a backlog: each one's top frames by own time."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with fresh_stack(root) as stack, Sampler(stack.pids()) as sampler:

        async def measure() -> dict[str, Path]:
            events, expected = history(events_count, ["50000001", "50000002"], 7)
            await publish(stack, events)
            outputs = {"starter": root / "starter.spy", "worker": root / "worker.spy"}
            recorders: list[subprocess.Popen[bytes]] = []

            def record() -> None:  # from the first event applied: the steady state, not the start-up
                for name, pid in (("starter", stack.starter_pids()["starter"]), ("worker", stack.pids()["worker"])):
                    argv = [
                        py_spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(seconds),
                        "--rate",
                        "200",
                        "--nonblocking",
                        "--format",
                        "raw",
                        "-o",
                        str(outputs[name]),
                    ]
                    recorders.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

            await drain(stack, sampler, events, expected, "batch", begun=record)
            for recorder in recorders:
                await asyncio.to_thread(recorder.wait)
            return outputs

        outputs = asyncio.run(measure())
    return {name: top_frames(path) for name, path in outputs.items() if path.exists()}


def top_frames(path: Path, count: int = 10) -> list[tuple[float, str]]:
    """The frames with the most own samples (a frame: function (file:line), as py-spy names it)."""
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        total += int(samples)
        frame = stack.split(";")[-1] or "(native code)"
        own[frame.split(" (")[0] + " (" + frame.split(" (")[1].split(":")[0] + ")" if " (" in frame else frame] += int(
            samples
        )
    return [(n / total, frame) for frame, n in own.most_common(count)] if total else []


# --- reporting ------------------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = psutil.virtual_memory().total / 1024**3
    return f"{platform.node()}: {os.cpu_count()} CPUs ({model}), {memory:.1f} GB RAM, {platform.platform()}"


def commit() -> str:
    """The commit measured, marked when the work tree differs from it."""

    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], capture_output=True, text=True, timeout=30, cwd=RESULTS.parent, check=True)
        return run.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head


def versions() -> str:
    found = [f"Python {platform.python_version()}"]
    for package in ("temporalio", "pulsar-client", "pulsar-lite", "redis", "pydantic"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{package} {importlib.metadata.version(package)}")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found.append(
            subprocess.run(
                [str(temporal_binary()), "--version"], capture_output=True, text=True, timeout=30
            ).stdout.strip()
        )
    return ", ".join(found)


Row = tuple[str, Callable[[dict[str, Any]], float], str]


def table(rounds: list[dict[str, Any]], rows: list[Row]) -> list[str]:
    lines = ["| measure | median | min | max | target | met |", "| --- | ---: | ---: | ---: | --- | --- |"]
    for name, pick, target in rows:
        values = [pick(r) for r in rounds]
        median, low, high = spread(values)
        met = _met(median, target)
        lines.append(f"| {name} | {median:,.2f} | {low:,.2f} | {high:,.2f} | {target} | {met} |")
    return lines


def _met(value: float, target: str) -> str:
    if target.startswith("≥ "):
        return "yes" if value >= float(target[2:].replace(",", "").split()[0]) else "**no**"
    if target.startswith("< "):
        return "yes" if value < float(target[2:].replace(",", "").split()[0]) else "**no**"
    return ""


def report(
    batch: list[dict[str, Any]], per_event: list[dict[str, Any]], profile: dict[str, Any], command: str, elapsed: float
) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    batch_rows: list[Row] = [
        ("raw Pulsar→Redis ceiling, msgs/s", lambda r: r["raw_ingest"], ""),
        ("batch mode, events/s (backlog drained by starter + worker)", lambda r: r["batch"], "≥ 5,000"),
        ("batch mode ÷ raw Pulsar→Redis", lambda r: r["batch"] / r["raw_ingest"], "≥ 0.15"),
        ("offered 1,000/s: publish→applied p50, ms", lambda r: r["p50_ms_at_1000"], ""),
        ("offered 1,000/s: publish→applied p99, ms", lambda r: r["p99_ms_at_1000"], "< 500"),
        ("offered 3,000/s: publish→applied p50, ms", lambda r: r["p50_ms_at_3000"], ""),
        ("offered 3,000/s: publish→applied p99, ms", lambda r: r["p99_ms_at_3000"], "< 2,000"),
        (
            "raw producer ceiling (native send_async, prebuilt payloads, no event loop), msgs/s",
            lambda r: r["raw_producer"],
            "",
        ),
        ("EntryEventProducer, msgs/s (batched)", lambda r: r["producer"], "≥ 10,000"),
        ("EntryEventProducer ÷ raw producer", lambda r: r["producer"] / r["raw_producer"], ""),
        (
            "EntryEventProducer send p99 at 1,000 msgs/s, pipeline applying them, ms",
            lambda r: r["producer_send_p99_ms_at_1000"],
            "< 20",
        ),
        (
            "the same, its event loop shared with the applied-watcher (offered 1,000/s above), ms",
            lambda r: r["producer_send_p99_ms_beside_watcher"],
            "",
        ),
        ("worker peak RSS, MB", lambda r: r["rss_mb"]["worker"], "< 200"),
        ("starter peak RSS, MB", lambda r: r["rss_mb"]["starter"], "< 200"),
    ]
    per_event_rows: list[Row] = [
        ("no-op workflow ceiling before ours, completions/s", lambda r: r["noop_before"], ""),
        ("no-op workflow ceiling after ours, completions/s", lambda r: r["noop_after"], ""),
        ("no-op workflow ceiling (mean of the two), completions/s", lambda r: r["noop"], ""),
        ("per-event mode, events/s", lambda r: r["per_event"], ""),
        ("per-event ÷ no-op", lambda r: r["per_event"] / r["noop"], "≥ 0.8"),
        ("worker peak RSS, MB", lambda r: r["rss_mb"]["worker"], "< 200"),
        ("starter peak RSS, MB", lambda r: r["rss_mb"]["starter"], "< 200"),
    ]
    cpu_names = sorted(batch[0]["batch_cpu_us"], key=lambda n: -batch[0]["batch_cpu_us"][n])
    cpu = ", ".join(f"{n} {spread([r['batch_cpu_us'].get(n, 0.0) for r in batch])[0]:.0f}" for n in cpu_names)
    pe_names = sorted(per_event[0]["per_event_cpu_us"], key=lambda n: -per_event[0]["per_event_cpu_us"][n])
    pe_cpu = ", ".join(f"{n} {spread([r['per_event_cpu_us'].get(n, 0.0) for r in per_event])[0]:.0f}" for n in pe_names)
    exact = all(r["exact"] for r in batch + per_event)
    lines = [
        START,
        f"## `make bench` (issue 11), {when}",
        "",
        f"Command: `{command}` at commit {commit()} ({len(batch)} rounds, {elapsed / 60:.1f} min). "
        f"Machine: {machine()}. "
        f"Versions: {versions()}.",
        "",
        "Each round: fresh stacks; the ceilings first, then ours, on the same servers. Median, min and max over "
        "the rounds; a ratio is taken within its round. Events/s run from the first event applied to the last "
        "(applied: its idempotency mark appears in Redis, seen through keyspace notifications). The Temporal "
        "dev server uses a database file with `journal_mode=wal`, `synchronous=normal`.",
        "",
        f"Every pair's key count and VSync equal the in-memory computation after every run: **{exact}**.",
        "",
        "### Batch mode (ApplyCIDBatch) and the producer",
        "",
        *table(batch, batch_rows),
        "",
        f"CPU per event while draining (µs, median over the rounds, by process): {cpu}.",
        "",
        "### Per-event mode (one CreateCID/UpdateCID/DeleteCID run per event)",
        "",
        *table(per_event, per_event_rows),
        "",
        f"CPU per event (µs, median over the rounds, by process): {pe_cpu}.",
        "",
        "### Where the CPU goes (py-spy, a batch drain after the rounds, own samples)",
        "",
    ]
    for name, frames in profile.items():
        lines.append(f"- {name}: " + "; ".join(f"{share:.0%} {frame}" for share, frame in frames))
    lines += ["", END]
    return "\n".join(lines)


def write(section: str) -> None:
    text = RESULTS.read_text()
    if START in text:
        before, rest = text.split(START, 1)
        text = before + section + rest.split(END, 1)[1]
    else:
        head, _, tail = text.partition("\n## ")
        text = head.rstrip() + "\n\n" + section + "\n\n## " + tail
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000, help="the backlog batch mode drains")
    parser.add_argument("--per-event-events", type=int, default=1_000)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave RESULTS.md alone")
    parser.add_argument("--replicas", type=int, default=1, help="workers and starters side by side (Key_Shared)")
    options = parser.parse_args()
    started = time.perf_counter()
    batch, per_event = [], []
    for index in range(options.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            batch.append(batch_round(Path(tmp), options.events, seed=100 + index, replicas=options.replicas))
            print(f"round {index + 1} batch: {_brief(batch[-1])}", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            per_event.append(
                per_event_round(Path(tmp), options.per_event_events, seed=200 + index, replicas=options.replicas)
            )
            print(f"round {index + 1} per-event: {_brief(per_event[-1])}", flush=True)
    profile: dict[str, Any] = {}
    if not options.no_profile:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            profile = profiled_drain(Path(tmp), options.events * 3, seconds=5)
    command = (
        "make bench" if os.environ.get("MAKELEVEL") else " ".join([".venv/bin/python -m bench.run", *sys.argv[1:]])
    )
    section = report(batch, per_event, profile, command, time.perf_counter() - started)
    print(section)
    if not options.no_write:
        write(section)
    if not all(r["exact"] for r in batch + per_event):
        sys.exit("a VSync differed from the in-memory computation: see above")


def _brief(result: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items() if not isinstance(v, dict)
    )


if __name__ == "__main__":
    main()
