"""`cidsync publish`: entry events into Pulsar, from a file or generated, with a summary.

Everything is validated before the first send: a file with one bad event publishes nothing (exit 2).

On a dev stack, each change is first made in its DICT (the simulator), as core makes it before it
publishes the event: otherwise the stack's DICT would never hear of the CIDs cidsync applies, and its
follower and reconciliations would undo them. A change DICT refuses (a key it already holds, an update of
an entry it does not know) is not published, as core would not publish it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cidsync.cli.domain_commands import read_input
from cidsync.cli.options import PULSAR, add_settings_flags, run_async, settings_of
from cidsync.config import dev_stack_endpoints, parse_participants
from cidsync.errors import InvalidInput, Problem
from cidsync.events import EntryEvent, parse_event, parse_event_json
from cidsync_tooling.pacing import chunk_for, paced
from cidsync_tooling.simulator.dict_state import ChangeOutcome

if TYPE_CHECKING:
    from cidsync.producer import EntryEventProducer
    from cidsync_tooling.simulator.dict_first import DictFirst

MAX_REPORTED_FAILURES = 5


def read_events(raw: bytes, source: str) -> list[EntryEvent]:
    """One JSON event, or JSON Lines of events; every line is checked before any is returned."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(source, [Problem(source, "is not UTF-8 text")]) from None
    stripped = text.strip()
    if not stripped:
        raise InvalidInput(source, [Problem(source, "is empty")])
    try:
        whole = json.loads(stripped)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        return [parse_event(whole)]
    events, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(parse_event_json(line))
        except InvalidInput as error:
            problems += [Problem(f"line {number}: {p.field}", p.reason) for p in error.problems]
    if problems:
        raise InvalidInput(source, problems)
    return events


@dataclass
class Summary:
    sent: int = 0
    failed: int = 0
    dead_lettered: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    dict_first: DictFirst | None = None  # None: no DICT was told first
    failures: list[str] = field(default_factory=list)

    @property
    def refused(self) -> int:
        """Events DICT refused, and so not published."""
        return len(self.dict_first.refusals) if self.dict_first else 0

    def percentile(self, share: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "dead_lettered": self.dead_lettered,
            "elapsed_s": round(self.elapsed_s, 3),
            "msgs_per_s": round(self.sent / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "latency_p50_ms": round(self.percentile(0.50), 2),
            "latency_p99_ms": round(self.percentile(0.99), 2),
            "dict_first": None
            if (told := self.dict_first) is None
            else {str(k): told.outcomes[k] for k in (*ChangeOutcome, told.WAITING)},
        }


def _dict_address(args: argparse.Namespace, pulsar_url: str) -> str | None:
    """The simulator to make each change in first: `--dict-address`, else the running dev stack's when the
    events go to its broker; none with `--no-dict`."""
    if args.no_dict:
        return None
    if args.dict_address:
        return str(args.dict_address)
    dev = dev_stack_endpoints()
    return dev.get("simulator_address") if dev.get("pulsar_url") == pulsar_url else None


def _events_of(args: argparse.Namespace) -> list[EntryEvent]:
    """Step 1: the events, read from FILE or generated, every one validated before anything is sent."""
    from cidsync.producer import build_event
    from cidsync_tooling.synthetic import synthetic_history

    if args.rate < 0:
        raise InvalidInput("arguments", [Problem("--rate", "R >= 0 (0: no limit)")])
    if args.generate is None:
        if args.file is None:
            raise InvalidInput("arguments", [Problem("FILE", "give a file of events, or --generate N")])
        return read_events(read_input(args.file, "events"), args.file)
    if args.generate < 1:
        raise InvalidInput("arguments", [Problem("--generate", "N >= 1")])
    participants = list(parse_participants(args.participants, "--participants"))
    if not participants:
        raise InvalidInput("arguments", [Problem("--participants", "at least one participant")])
    # Made up front, so the clock measures publishing, not the generator.
    history = synthetic_history(args.generate, participants, seed=args.seed)
    return [build_event(c.event_type, c.entry, args.user_id, deletion_type=c.deletion_type) for c in history]


async def _send(
    events: list[EntryEvent], rate: float, producer: EntryEventProducer, dict_first: DictFirst | None
) -> Summary:
    """Step 2: the paced publisher. Chunk by chunk (all at once at rate 0, a tenth of a second's worth
    otherwise): the changes made in DICT first, then the events DICT accepted, on the producer's bulk path
    (one wake-up of the loop per chunk's acknowledgements)."""
    from cidsync.producer import Published

    summary = Summary(dict_first=dict_first)
    started = time.perf_counter()
    async for chunk in paced(events, rate, chunk=chunk_for(rate) if rate else max(1, len(events))):
        accepted = await dict_first.accepted(chunk) if dict_first else chunk
        for outcome in await producer.publish_events(accepted):
            if isinstance(outcome, Published):
                summary.sent += 1
                summary.latencies_ms.append(outcome.latency_ms)
            else:
                summary.failed += 1
                summary.dead_lettered += outcome.dead_lettered
                summary.failures.append(str(outcome))
    summary.elapsed_s = time.perf_counter() - started
    if dict_first is not None:
        summary.failures += [
            f"event {e.event_id}: DICT refused it, not published: {why}" for e, why in dict_first.refusals
        ]
    return summary


def _report(summary: Summary, address: str | None, *, generated: bool, as_json: bool) -> int:
    """Step 3: failures on stderr (the first few), the summary on stdout; the exit status."""
    refused = summary.refused
    for line in summary.failures[:MAX_REPORTED_FAILURES]:
        print(f"cidsync: {line}", file=sys.stderr)
    if len(summary.failures) > MAX_REPORTED_FAILURES:
        print(f"cidsync: ... and {len(summary.failures) - MAX_REPORTED_FAILURES} more failures", file=sys.stderr)
    if refused and generated:
        print(
            "cidsync: DICT already holds entries of this history (published before on this stack?): "
            "give another --seed",
            file=sys.stderr,
        )
    report = summary.as_dict()
    if as_json:
        print(json.dumps(report))
    else:
        if (told := summary.dict_first) is not None:
            outcomes = told.outcomes
            print(
                f"DICT first ({address}): {outcomes[ChangeOutcome.APPLIED]} applied, "
                f"{outcomes[ChangeOutcome.ALREADY]} already there (repeats), {outcomes[told.WAITING]} left to "
                f"their waiting period, {refused} refused and not published"
            )
        print(
            f"sent {report['sent']}, failed {report['failed']} (dead-lettered {report['dead_lettered']}) "
            f"in {report['elapsed_s']} s: {report['msgs_per_s']} msgs/s, "
            f"send latency p50 {report['latency_p50_ms']} ms, p99 {report['latency_p99_ms']} ms"
        )
    return 0 if summary.failed == 0 and not refused else 1


async def _publish(args: argparse.Namespace) -> int:
    from cidsync.producer import EntryEventProducer, ProducerConfig
    from cidsync.topics import Topics
    from cidsync_tooling.simulator.admin_client import SimulatorAdmin
    from cidsync_tooling.simulator.dict_first import DictFirst

    settings = settings_of(args)
    events = await asyncio.to_thread(_events_of, args)
    address = _dict_address(args, settings.require("pulsar_url"))
    producer = await EntryEventProducer.connect(
        settings.require("pulsar_url"),
        topics=Topics(namespace=settings.pulsar_namespace),
        config=ProducerConfig.low_latency() if args.low_latency else ProducerConfig(),
    )
    admin = SimulatorAdmin(address) if address else None
    try:
        summary = await _send(events, args.rate, producer, DictFirst(admin) if admin else None)
    finally:
        await producer.close()
        if admin is not None:
            await admin.close()
    return _report(summary, address, generated=args.generate is not None, as_json=args.json)


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "publish",
        help="publish entry events to Pulsar (a file, JSONL, or --generate N), with a summary",
        description="Publish entry events (contract v1) to the entry topics. Everything is validated "
        "before the first send. On a dev stack, each change is made in its DICT first, as core does, and "
        "an event DICT refuses is not published. Exit status 1 when any event failed (dead-lettered or "
        "lost) or was refused by DICT.",
    )
    parser.add_argument("file", nargs="?", metavar="FILE", help="one event as JSON, or JSON Lines; - for stdin")
    parser.add_argument("--generate", type=int, metavar="N", help="N synthetic events over every key type")
    parser.add_argument("--rate", type=float, default=0.0, metavar="R", help="events per second (0: no limit)")
    parser.add_argument("--participants", default="12345678", metavar="ISPB,...", help="for --generate")
    parser.add_argument("--seed", type=int, default=0, help="for --generate: the same seed, the same events")
    parser.add_argument("--user-id", default="cidsync-generator", help="for --generate")
    parser.add_argument("--low-latency", action="store_true", help="no batching (the low_latency() preset)")
    add_settings_flags(parser, PULSAR)
    parser.add_argument("--json", action="store_true", help="the summary as one JSON object")
    parser.add_argument(
        "--no-dict", action="store_true", help="publish only: do not make the changes in the dev stack's DICT first"
    )
    parser.add_argument(
        "--dict-address",
        metavar="HOST:PORT",
        help="make each change first in this DICT simulator (default: the dev stack's, when "
        "the events go to its broker)",
    )
    parser.set_defaults(handler=run_async(_publish))
