"""`cidsync demo` (`make demo`): the main job, end to end on the embedded stack.

It brings the stack up (Temporal, Pulsar, Redis, the DICT simulator, the worker and the starter),
makes a realistic history of entry changes in DICT as core does, publishes their events (every key type,
updates, deletes, duplicates and a few malformed messages), waits until the worker has applied them, and
shows per (participant, key type) the count, the local VSync and whether DICT agrees. A kept stack keeps
its DICT too: each run has participants and a history (`--seed`, random unless given) of its own.

Then it changes DICT behind cidsync's back (entries added, removed and altered in the simulator), shows
DICT answering NOK, runs one ReconcileVSync per key type on the stack's worker, and shows the outcome, the
repairs, the notifications core received on `core-events`, and DICT answering OK again.

Last, continuous verification: followers of DICT's CID event log (FollowCIDEvents) for the other
participant, DICT changed behind cidsync's back again, and the change found in the log and repaired
after the grace period, with no CID file requested. It stops only what it started itself (the followers
included), so a stack a developer already had running is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from cidsync.cid import cid, vsync
from cidsync.entry import Entry, KeyType, parse_jsonl_entries
from cidsync.events import DeletionType, EntryEvent, EventType
from cidsync_tooling.devstack.spec import StackSpec
from cidsync_tooling.devstack.stack import StackState, down, read_state, up

SAMPLE_ENTRIES = "sample_entries.jsonl"
PARTICIPANT_COUNT = 2
MALFORMED = [
    b"{this is not json",
    b'{"schema": "cidsync.entry-event/v2", "event_type": "entry.created"}',
    b'{"schema": "cidsync.entry-event/v1", "event_type": "entry.deleted", "sequence": 0}',
]
APPLY_TIMEOUT_S = 600.0


def sample_entries() -> list[Entry]:
    """The bundled sample: valid entries over two participants and every key type."""
    text = resources.files("cidsync_tooling.data").joinpath(SAMPLE_ENTRIES).read_text(encoding="utf-8")
    return list(parse_jsonl_entries(text.splitlines(), SAMPLE_ENTRIES))


def vsync_table(entries: Iterable[Entry]) -> list[tuple[str, KeyType, int, str]]:
    """(participant, key type, count, VSync), sorted, for every pair that has entries."""
    groups: dict[tuple[str, KeyType], list[str]] = {}
    for entry in entries:
        groups.setdefault((entry.participant, entry.key_type), []).append(cid(entry))
    return [(p, k, len(cids), vsync(cids)) for (p, k), cids in sorted(groups.items())]


def active_after(events: Iterable[EntryEvent]) -> list[Entry]:
    """The entries cidsync holds once the history is applied: the last event of each entry decides,
    and a WAITING_PERIOD delete has not applied yet (DICT's 30 days)."""
    latest: dict[uuid.UUID, EntryEvent] = {}
    for event in sorted(events, key=lambda e: e.sequence):
        latest[event.entry.id] = event
    return [
        e.entry
        for e in latest.values()
        if e.event_type is not EventType.DELETED or e.deletion_type is DeletionType.WAITING_PERIOD
    ]


@dataclass(frozen=True)
class DemoOptions:
    events: int = 2_000
    duplicates: float = 0.05
    seed: int | None = None  # None: a new history each run (a kept stack's DICT holds the keys of earlier ones)


@dataclass
class History:
    """One run's history: its own participants, its events in commit order, and what is delivered (the
    events, some twice, shuffled: arrival order is not commit order, `sequence` is what orders)."""

    participants: list[str]
    seed: int
    events: list[EntryEvent]
    delivered: list[EntryEvent]

    @classmethod
    def make(cls, options: DemoOptions) -> History:
        from cidsync.producer import build_event
        from cidsync_tooling.synthetic import synthetic_history

        # Participants of this run alone: a stack that is kept (`.cidsync`, AOF on) still holds what earlier
        # runs applied, including WAITING_PERIOD deletes 30 days from due, which would never match this run's.
        participants = [f"{random.SystemRandom().randrange(10**7, 10**8)}" for _ in range(PARTICIPANT_COUNT)]
        seed = random.SystemRandom().randrange(10**6) if options.seed is None else options.seed
        history = synthetic_history(options.events, participants, seed=seed)
        events = [build_event(c.event_type, c.entry, "demo", deletion_type=c.deletion_type) for c in history]
        rng = random.Random(seed)
        duplicates = rng.sample(events, int(len(events) * options.duplicates))
        delivered = events + duplicates
        rng.shuffle(delivered)
        return cls(participants, seed, events, delivered)

    def describe(self) -> str:
        kinds = {t: sum(1 for e in self.events if e.event_type is t) for t in EventType}
        waiting = sum(1 for e in self.events if e.deletion_type is DeletionType.WAITING_PERIOD)
        return (
            f"{len(self.events)} entry events ({kinds[EventType.CREATED]} created, {kinds[EventType.UPDATED]} "
            f"updated, {kinds[EventType.DELETED]} deleted of which {waiting} with DICT's 30-day waiting "
            f"period), {len(self.delivered) - len(self.events)} duplicates, shuffled, and {len(MALFORMED)} "
            f"malformed messages (participants {', '.join(self.participants)}, --seed {self.seed})"
        )

    def expected(self) -> dict[tuple[str, KeyType], tuple[int, str]]:
        return {(p, k): (n, v) for p, k, n, v in vsync_table(active_after(self.events))}


Pairs = dict[tuple[str, KeyType], tuple[int, str]]  # (participant, key type) -> (count, VSync)


async def _run(spec: StackSpec, state: StackState, options: DemoOptions) -> bool:
    """The demo's steps, in order; True when every one showed what it should."""
    import pulsar

    from cidsync.config import load_settings
    from cidsync.pulsar_client import pulsar_client
    from cidsync.redis_client import redis_client
    from cidsync.store.cid_store import CIDStore
    from cidsync.topics import Topics

    settings = load_settings({}, dev_endpoints=state.endpoints())
    topics = Topics(namespace=state.pulsar_namespace)
    history = History.make(options)
    print(f"\n== publishing {history.describe()}")
    if state.simulator_address and not await _make_in_dict_first(state.simulator_address, history):
        return False
    client = pulsar_client(settings.require("pulsar_url"))
    store = CIDStore(redis_client(settings.require("redis_url")), settings.key_secret_bytes)
    try:
        dlq = await client.subscribe(
            topics.dead_letter_topic, f"demo-{uuid.uuid4()}", initial_position=pulsar.InitialPosition.Latest
        )
        started = await _publish(client, topics, history)
        expected = history.expected()
        print(f"\n== waiting for the worker to apply them ({_how(spec.starter.mode)}; watch them in the Web UI)")
        current = await _wait_applied(state, store, history.participants, expected, started)
        applied = current == expected
        print(f"   {'all applied' if applied else 'NOT all applied'} after {time.perf_counter() - started:.0f} s")
        verified = await _verify_with_dict(state.bridge_address, current) if state.bridge_address else False
        reconciled = followed = False
        if state.simulator_address:  # DICT changed behind cidsync's back: reconciled, then found by a follower
            reconciled = await _reconcile(state, settings, current, history.participants[0])
            followed = await _follow(spec, state, current, history.participants[1])
        dead_letters = await _dead_letters(dlq, topics.dead_letter_topic)
    finally:
        await client.close()
        await store.close()
    return applied and verified and dead_letters and reconciled and followed


async def _make_in_dict_first(simulator_address: str, history: History) -> bool:
    """Core's order: each change made in DICT first (commit order), then its event."""
    from cidsync_tooling.simulator.admin_client import SimulatorAdmin
    from cidsync_tooling.simulator.dict_first import DictFirst
    from cidsync_tooling.simulator.dict_state import ChangeOutcome

    async with SimulatorAdmin(simulator_address) as admin:
        dict_first = DictFirst(admin)
        refused = await dict_first.refused(history.events)
    told = dict_first.outcomes
    print(
        f"   made in DICT first, as core does: {told[ChangeOutcome.APPLIED]} applied, "
        f"{told[dict_first.WAITING]} deletes left to their waiting period"
    )
    if refused:
        print(
            f"   DICT refused {len(refused)} of them (a kept stack that ran --seed {history.seed} before?): "
            f"{dict_first.refusals[0][1]}"
        )
    return not refused


async def _publish(client: Any, topics: Any, history: History) -> float:
    """The delivered events, then the malformed messages; returns when publishing started."""
    from cidsync.producer import EntryEventProducer

    producer = EntryEventProducer(client, topics=topics)
    await producer.start()
    started = time.perf_counter()
    try:
        await producer.publish_events(history.delivered)
        raw = await client.create_producer(topics.full(topics.created), batching_enabled=False)
        for payload in MALFORMED:
            await raw.send(payload)
        await producer.flush()
    finally:
        await producer.close()
    print(f"   published in {time.perf_counter() - started:.1f} s")
    return started


def _how(starter_mode: str) -> str:
    if starter_mode == "per-event":
        return "one workflow per event"
    return (
        "batch mode: up to 500 events per ApplyCIDBatch run, a DeleteCID run of its own for each WAITING_PERIOD delete"
    )


async def _wait_applied(
    state: StackState, store: Any, participants: list[str], expected: Pairs, started: float
) -> Pairs:
    """Until the store holds the expected pairs (or a role stopped, or APPLY_TIMEOUT_S); what it holds."""

    async def local() -> Pairs:
        found = {}
        for participant in participants:
            for key_type in KeyType:
                count = await store.view.count(participant, key_type)
                if count or (participant, key_type) in expected:
                    found[(participant, key_type)] = (count, await store.view.vsync(participant, key_type))
        return found

    deadline = time.perf_counter() + APPLY_TIMEOUT_S
    shown = 0.0
    while (current := await local()) != expected and time.perf_counter() < deadline:
        if stopped := [name for name in ("worker", "starter") if state.running().get(name) is False]:
            for name in stopped:  # no point waiting: say why, from the role's own log
                print(f"   the {name} stopped ({state.services[name].log}): {_last_line(state.services[name].log)}")
            break
        if time.perf_counter() - shown > 5:
            shown = time.perf_counter()
            print(
                f"   {sum(n for n, _ in current.values())} of {sum(n for n, _ in expected.values())} CIDs "
                f"in place after {shown - started:.0f} s",
                flush=True,
            )
        await asyncio.sleep(0.5)
    return current


async def _verify_with_dict(bridge_address: str, current: Pairs) -> bool:
    """Each pair's local VSync verified by DICT; True when DICT agrees with every one."""
    from cidsync.bridge.client import BridgeClient

    async with BridgeClient(bridge_address) as bridge:
        verdicts = {
            pair: (await bridge.verify_sync(pair[0], pair[1], value)).ok for pair, (_, value) in current.items()
        }
    print(
        "\n== local VSync per (participant, key type), verified by DICT (the simulator, told first) through the "
        "worker's Bridge"
    )
    print(f"   {'participant':<11} {'key type':<8} {'count':>6}  {'vsync':<64}  DICT")
    for (participant, key_type), (count, value) in sorted(current.items()):
        print(
            f"   {participant:<11} {key_type.value:<8} {count:>6}  {value}  "
            f"{'OK' if verdicts[(participant, key_type)] else 'NOK'}"
        )
    return bool(verdicts) and all(verdicts.values())


async def _dead_letters(dlq: Any, topic: str) -> bool:
    """The malformed messages on the dead-letter topic, each with its reason; True when all are there."""
    letters: list[Any] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            while len(letters) < len(MALFORMED):
                letter = await dlq.receive()
                await dlq.acknowledge(letter)
                letters.append(letter)
    print(
        f"\n== dead-letter topic {topic}: {len(letters)} messages (the {len(MALFORMED)} malformed ones), "
        "with their reasons:"
    )
    for letter in letters:
        print(f"   - {letter.properties().get('reason', '?')[:110]}")
    return len(letters) == len(MALFORMED)


async def _reconcile(
    state: StackState, settings: Any, current: dict[tuple[str, KeyType], tuple[int, str]], participant: str
) -> bool:
    """Diverge DICT for one participant, every key type; reconcile each; show NOK turning OK."""
    from datetime import timedelta

    import pulsar

    from cidsync.bridge.client import BridgeClient
    from cidsync.pulsar_client import pulsar_client
    from cidsync.redis_client import redis_client
    from cidsync.store.cid_store import CIDStore
    from cidsync.temporal_client import connect
    from cidsync.topics import Topics
    from cidsync_tooling.simulator.admin_client import SimulatorAdmin
    from starters.reconciliation import start_reconciliation
    from workflows.reconcile_vsync import ReconcileInput, ReconcileResult

    key_types = [k for k in KeyType if (participant, k) in current]
    print(
        f"\n== reconciliation: DICT changes behind cidsync's back for participant {participant} "
        "(per key type: 3 entries added, 2 removed, 2 altered there)"
    )
    assert state.simulator_address is not None
    assert state.bridge_address is not None
    async with SimulatorAdmin(state.simulator_address) as admin:
        for index, key_type in enumerate(key_types):
            room = current[(participant, key_type)][0] // 3
            await admin.diverge(
                participant, key_type, add=3, remove=min(2, room), alter=min(2, room), seed=7_000 + index
            )
    store = CIDStore(redis_client(settings.require("redis_url")), settings.key_secret_bytes)
    pulsar_ = pulsar_client(settings.require("pulsar_url"))
    topics = Topics(namespace=state.pulsar_namespace)
    core = await pulsar_.subscribe(
        topics.full(topics.core_events), f"demo-core-{uuid.uuid4()}", initial_position=pulsar.InitialPosition.Latest
    )
    try:
        async with BridgeClient(state.bridge_address) as bridge:

            async def verdicts() -> dict[KeyType, str]:
                found = {}
                for key_type in key_types:
                    local = await store.view.vsync(participant, key_type)
                    found[key_type] = "OK" if (await bridge.verify_sync(participant, key_type, local)).ok else "NOK"
                return found

            before = await verdicts()
            client = await connect(settings, identity="cidsync-demo")
            started = time.perf_counter()
            requests = [
                ReconcileInput(
                    participant=participant,
                    key_type=k,
                    trigger="demo",
                    poll_initial=timedelta(seconds=1),
                    grace=timedelta(seconds=2),
                )  # the demo's events are all applied by then
                for k in key_types
            ]
            handles = [await start_reconciliation(client, r, settings.task_queue) for r in requests]
            print(f"   started {len(handles)} ReconcileVSync runs ({', '.join(h.id for h in handles[:2])}, ...)")
            results: list[ReconcileResult] = await asyncio.gather(*(h.result() for h in handles))
            elapsed = time.perf_counter() - started
            after = await verdicts()
        expected_messages = sum(r.added + r.removed for r in results) + len(results)
        # Counted by event id, as core deduplicates them: a publish retried under load sends one twice.
        seen: dict[str, str] = {}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                while len(seen) < expected_messages:
                    message = await core.receive()
                    await core.acknowledge(message)
                    properties = message.properties()
                    seen[properties.get("event_id") or str(message.message_id())] = properties.get("event_type", "?")
        received = dict(Counter(seen.values()))
    finally:
        await pulsar_.close()
        await store.close()
    print(f"   all finished in {elapsed:.1f} s")
    print(f"   {'key type':<8} {'before':<6} {'outcome':<15} {'added':>5} {'removed':>7} {'verifications':>13}  after")
    for r in results:
        print(
            f"   {r.key_type.value:<8} {before[r.key_type]:<6} {r.outcome.value:<15} "
            f"{r.added:>5} {r.removed:>7} {r.verifications:>13}  {after[r.key_type]}"
        )
    print("   (an altered entry counts as added: its key moves to DICT's new CID, which drops the old one)")
    print(f"   core-events received: {', '.join(f'{n} {kind}' for kind, n in sorted(received.items()))}")
    return (
        all(v == "NOK" for v in before.values())
        and all(v == "OK" for v in after.values())
        and all(r.outcome.value == "REPAIRED" for r in results)
        and sum(received.values()) == expected_messages
    )


FOLLOWED = 2  # key types followed in the demo: five followers of one participant would share DICT's 20 calls/min
FOLLOW_TIMING = {"grace_seconds": 5.0, "poll_seconds": 1.0, "idle_seconds": 2.0}


async def _follow(
    spec: StackSpec, state: StackState, current: dict[tuple[str, KeyType], tuple[int, str]], participant: str
) -> bool:
    """Continuous verification: DICT changed behind cidsync's back, found in DICT's CID event log by the
    followers and repaired after their grace period, without a CID file."""
    from cidsync.bridge.client import BridgeClient
    from cidsync.config import load_settings
    from cidsync.temporal_client import connect
    from cidsync_tooling.devstack.followers import ensure_stack_followers
    from cidsync_tooling.simulator.admin_client import SimulatorAdmin
    from workflows.follow_cid_events import FollowCIDEvents, FollowStatus

    # The two key types with the most entries (an altered and a removed entry need two).
    counts = {k: current.get((participant, k), (0, ""))[0] for k in KeyType}
    key_types = sorted((k for k in KeyType if counts[k] >= 2), key=lambda k: -counts[k])[:FOLLOWED]
    if not key_types:
        print(f"\n== continuous verification: participant {participant} holds too few entries to show it")
        return False
    grace = FOLLOW_TIMING["grace_seconds"]
    print(
        f"\n== continuous verification: FollowCidEvents reads DICT's CID event log for participant "
        f"{participant} ({', '.join(k.value for k in key_types)}; a {grace:.0f} s grace period here, 2 min by "
        "default), and DICT changes behind cidsync's back (per key type: 2 added, 1 removed, 1 altered)"
    )
    assert state.simulator_address is not None
    assert state.bridge_address is not None
    settings = load_settings({}, dev_endpoints=state.endpoints())
    client = await connect(settings, identity="cidsync-demo")
    ids = await ensure_stack_followers(spec, state, [participant], key_types, **FOLLOW_TIMING)
    handles = {k: client.get_workflow_handle_for(FollowCIDEvents.run, i) for k, i in zip(key_types, ids, strict=True)}

    async def statuses() -> dict[KeyType, FollowStatus]:
        return {k: await h.query(FollowCIDEvents.status) for k, h in handles.items()}

    try:
        async with asyncio.timeout(30):
            while not all(s.state == "in sync" for s in (await statuses()).values()):  # noqa: ASYNC110 (a query)
                await asyncio.sleep(0.2)
        async with SimulatorAdmin(state.simulator_address) as admin:
            files_before = (await admin.stats())["files_created"]
            for index, key_type in enumerate(key_types):
                await admin.diverge(participant, key_type, add=2, remove=1, alter=1, seed=8_000 + index)
            injected = time.perf_counter()
            seen: dict[KeyType, float] = {}
            repaired: dict[KeyType, float] = {}
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(60):
                    while len(repaired) < len(key_types):
                        for key_type, status in (await statuses()).items():
                            if status.pending or status.added:
                                seen.setdefault(key_type, time.perf_counter() - injected)
                            if (status.added, status.removed, status.state) == (3, 1, "in sync"):
                                repaired.setdefault(key_type, time.perf_counter() - injected)
                        await asyncio.sleep(0.1)
            files = (await admin.stats())["files_created"] - files_before
        final = await statuses()
        async with BridgeClient(state.bridge_address) as bridge:
            verdicts = {k: (await bridge.verify_sync(participant, k, s.local_vsync)).ok for k, s in final.items()}
    finally:
        for handle in handles.values():  # the demo's participants are its own: their followers end with it
            await handle.terminate("the demo is over")
    print(f"   {'key type':<8} {'found after':>11} {'repaired after':>14} {'added':>5} {'removed':>7}  DICT")
    for key_type, status in final.items():
        found = f"{seen[key_type]:.1f} s" if key_type in seen else "never"
        fixed = f"{repaired[key_type]:.1f} s" if key_type in repaired else "NOT YET"
        print(
            f"   {key_type.value:<8} {found:>11} {fixed:>14} {status.added:>5} {status.removed:>7}  "
            f"{'OK' if verdicts[key_type] else 'NOK'}"
        )
    print(
        f"   CID files requested: {files} (the event log and GetEntryByCid were enough); an altered entry is one "
        "added, its old CID then leaves with it"
    )
    return len(repaired) == len(key_types) and all(verdicts.values()) and files == 0


def _last_line(log: str) -> str:
    path = Path(log)
    lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return lines[-1][:300] if lines else "no log"


def run_demo(spec: StackSpec, config_path: object, options: DemoOptions | None = None) -> int:
    from pathlib import Path

    before = read_state(spec.state_dir)
    already_running = before is not None and all(before.running().values())
    print(
        "== bringing up the embedded stack (Temporal, Pulsar, Redis, the DICT simulator, bridge serve, worker, "
        "starter): the worker reaches DICT through bridge serve and DICT API v2 (mutual TLS, signed XML)"
    )
    state = up(spec, Path(str(config_path)), on_start=lambda name: print(f"   starting {name}...", flush=True))
    try:
        good = asyncio.run(_run(spec, state, options or DemoOptions()))
        print(f"\n== Temporal Web UI: {state.temporal_ui or 'off (headless)'}")
        print(
            f"   e.g. .venv/bin/temporal workflow list --address {state.temporal_address} "
            '--query \'CidKeyType="EVP" AND CidEventType="entry.deleted"\''
        )
        print(
            f"        .venv/bin/temporal workflow list --address {state.temporal_address} "
            '--query \'CidEventType="reconcile" AND CidOutcome="REPAIRED"\''
        )
        print(
            f"        .venv/bin/temporal workflow list --address {state.temporal_address} "
            '--query \'CidPhase="waiting period" AND ExecutionStatus="Running"\''
        )
        print(
            "        .venv/bin/cidsync follow status   (the followers of DICT's event log, when participants are set)"
        )
        verdict = "every VSync applied and confirmed by DICT, every divergence repaired"
        print("\n== " + (verdict if good else "SOMETHING IS WRONG: see above"))
    finally:
        if already_running:
            print("\n== the stack was already running before the demo: left up (`cidsync dev down` stops it)")
        else:
            print("\n== stopping the stack the demo started")
            down(spec.state_dir)
    return 0 if good else 1
