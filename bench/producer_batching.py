"""What key-based batching costs the producer: `EntryEventProducer` with Pulsar's default batching and with
key-based batching (one batch per entry, the default since issue 25), each next to the native client's
ceiling batched the same way, on one embedded broker, in alternating rounds.

Key-based batching matters on Apache Pulsar's Key_Shared subscription, which dispatches a batch whole by its
first message's key; its price is smaller batches: a batch holds only the events of one entry within the
batching delay, so a history of many entries sends about one message per broker entry.

    .venv/bin/python -m bench.producer_batching [--events 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.ceilings import raw_producer
from cidsync.events import EntryEvent
from cidsync.producer import EntryEventProducer, ProducerConfig, Published, build_event
from cidsync.pulsar_client import pulsar_client
from cidsync.topics import Topics
from cidsync_tooling.devstack.processes import free_port
from cidsync_tooling.devstack.servers import start_pulsar
from cidsync_tooling.synthetic import synthetic_history

MODES = {"default": False, "key-based": True}


def history(count: int) -> list[EntryEvent]:
    changes = synthetic_history(count, ["90000001", "90000002"], seed=7)
    return [
        build_event(c.event_type, c.entry, "bench", deletion_type=c.deletion_type, sequence=n)
        for n, c in enumerate(changes, start=1)
    ]


async def ours(url: str, events: list[EntryEvent], config: ProducerConfig, tag: str) -> float:
    producer = EntryEventProducer(pulsar_client(url), topics=Topics().suffixed(tag), config=config, owns_client=True)
    await producer.start()
    started = time.perf_counter()
    outcomes = await producer.publish_events(events)
    elapsed = time.perf_counter() - started
    await producer.close()
    failed = [o for o in outcomes if not isinstance(o, Published)]
    if failed:
        raise RuntimeError(f"{len(failed)} sends failed: {failed[:2]}")
    return len(events) / elapsed


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    events = history(args.events)
    entries = len({e.entry.id for e in events})
    figures: dict[str, dict[str, list[float]]] = {m: {"raw": [], "ours": []} for m in MODES}
    with tempfile.TemporaryDirectory() as scratch:
        port = free_port()
        broker = start_pulsar(
            port=port, metrics_port=free_port(), data_dir=Path(scratch) / "pulsar", log=Path(scratch) / "pulsar.log"
        )
        url = f"pulsar://127.0.0.1:{port}"
        try:
            for round_ in range(args.rounds):
                for mode, key_based in MODES.items():
                    config = replace(ProducerConfig(), key_based_batching=key_based)
                    raw = await asyncio.to_thread(raw_producer, url, events, config)
                    mine = await ours(url, events, config, f"{mode}-{round_}")
                    figures[mode]["raw"].append(raw)
                    figures[mode]["ours"].append(mine)
                    print(f"round {round_ + 1} {mode}: raw {raw:,.0f} msgs/s, ours {mine:,.0f} msgs/s", flush=True)
        finally:
            broker.stop()
    print(f"\n{args.events:,} events of {entries:,} entries, {args.rounds} rounds, medians (msgs/s):\n")
    print("| batching | native client (ceiling) | EntryEventProducer | ours ÷ ceiling |")
    print("|---|---:|---:|---:|")
    for mode in MODES:
        raw, mine = (statistics.median(figures[mode][k]) for k in ("raw", "ours"))
        print(f"| {mode} | {raw:,.0f} | {mine:,.0f} | {mine / raw:.2f} |")
    default, keyed = (statistics.median(figures[m]["ours"]) for m in MODES)
    print(f"\nkey-based ÷ default (EntryEventProducer): {keyed / default:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
