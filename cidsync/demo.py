"""`cidsync demo` (`make demo`): the main job, end to end on the embedded stack.

It brings the stack up, works on the bundled sample, prints what a platform team would look at, and
stops only what it started itself, so a stack a developer already had running is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from cidsync.cid import ZERO_VSYNC, cid, vsync
from cidsync.devstack.spec import StackSpec
from cidsync.devstack.stack import down, read_state, up
from cidsync.entry import Entry, KeyType, parse_jsonl_entries

SAMPLE_ENTRIES = "sample_entries.jsonl"


def sample_entries() -> list[Entry]:
    """The bundled sample: valid entries over two participants and every key type."""
    text = resources.files("cidsync.data").joinpath(SAMPLE_ENTRIES).read_text(encoding="utf-8")
    return list(parse_jsonl_entries(text.splitlines(), SAMPLE_ENTRIES))


def vsync_table(entries: Iterable[Entry]) -> list[tuple[str, KeyType, int, str]]:
    """(participant, key type, count, VSync), sorted, for every pair that has entries."""
    groups: dict[tuple[str, KeyType], list[str]] = defaultdict(list)
    for entry in entries:
        groups[(entry.participant, entry.key_type)].append(cid(entry))
    return [(p, k, len(cids), vsync(cids)) for (p, k), cids in sorted(groups.items())]


async def _verify_with_dict(address: str, entries: list[Entry]) -> list[str]:
    """Register the entries in the simulator (once) and ask DICT to verify each local VSync."""
    from cidsync.bridge.client import BridgeClient
    from cidsync.bridge.errors import InvalidArgument
    from cidsync.bridge.simulator.admin_client import SimulatorAdmin

    async with SimulatorAdmin(address) as admin:
        with contextlib.suppress(InvalidArgument):  # already there from an earlier demo on this stack
            await admin.load(entries)
    lines = []
    async with BridgeClient(address) as client:
        for participant, key_type, _, value in vsync_table(entries):
            result = await client.verify_sync(participant, key_type, value)
            lines.append(f"{participant} {key_type.value:<5} {'OK' if result.ok else 'NOK'}")
        probe = entries[0]
        wrong = await client.verify_sync(probe.participant, probe.key_type, ZERO_VSYNC)
        lines.append(f"{probe.participant} {probe.key_type.value:<5} {'OK' if wrong.ok else 'NOK'}"
                     "  (a wrong VSync, for contrast)")  # fmt: skip
    return lines


def run_demo(spec: StackSpec, config_path: Path) -> int:
    before = read_state(spec.state_dir)
    already_running = before is not None and all(before.running().values())
    print("== bringing up the embedded stack (Temporal, Pulsar, Redis, the DICT simulator)")
    state = up(spec, config_path, on_start=lambda name: print(f"   starting {name}...", flush=True))
    try:
        entries = sample_entries()
        print(f"\n== CIDs of the {len(entries)} bundled sample entries (entry id -> CID)")
        for entry in entries:
            print(f"   {entry.participant} {entry.key_type.value:<5} {entry.id}  {cid(entry)}")
        print("\n== VSync per (participant, key type)")
        print(f"   {'participant':<11} {'key type':<8} {'count':>5}  vsync")
        for participant, key_type, count, value in vsync_table(entries):
            print(f"   {participant:<11} {key_type.value:<8} {count:>5}  {value}")
        if state.bridge_address:
            print("\n== DICT (the simulator) loaded with the same entries; VerifySync of each local VSync")
            for line in asyncio.run(_verify_with_dict(state.bridge_address, entries)):
                print(f"   {line}")
        print(f"\n== Temporal Web UI: {state.temporal_ui or 'off (headless)'}")
    finally:
        if already_running:
            print("\n== the stack was already running before the demo: left up (`cidsync dev down` stops it)")
        else:
            print("\n== stopping the stack the demo started")
            down(spec.state_dir)
    return 0
