"""`cidsync publish` through the console script, against the session's pulsar-lite broker."""

import json
import random
import uuid
from collections import Counter
from pathlib import Path

import pulsar.asyncio as pulsar_asyncio

from cidsync.bridge.client import BridgeClient
from cidsync.cid import cid, vsync
from cidsync.entry import KeyType
from cidsync.events import EventType, parse_event_json
from cidsync.producer import build_event
from cidsync.pulsar_client import pulsar_client
from cidsync.topics import Topics
from cidsync_tooling.synthetic import synthetic_entry
from tests.helpers.cli_runner import cidsync
from tests.helpers.servers import BridgeSimulator, PulsarBroker
from tests.producer.conftest import receive, subscribe


def _namespace() -> str:
    """A namespace of this test's own: the CLI publishes to the contract's topic names."""
    return f"public/t{uuid.uuid4().hex[:10]}"


def _event_json() -> str:
    return build_event(EventType.CREATED, synthetic_entry(random.Random(), "12345678"), "user-9").to_json()


async def test_publishes_one_event_from_a_file(pulsar_broker: PulsarBroker, tmp_path: Path) -> None:
    namespace = _namespace()
    topics = Topics(namespace=namespace)
    event_json = _event_json()
    path = tmp_path / "event.json"
    path.write_text(event_json, encoding="utf-8")
    client = pulsar_client(pulsar_broker.url)
    try:
        consumer = await subscribe(client, topics.entry_topics())
        result = cidsync(
            "publish", str(path), "--pulsar-url", pulsar_broker.url, "--pulsar-namespace", namespace, "--json"
        )
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert (summary["sent"], summary["failed"]) == (1, 0)
        message = await receive(consumer)
        assert message.topic_name() == topics.full(topics.created)
        assert parse_event_json(message.data()) == parse_event_json(event_json)
    finally:
        await client.close()


async def test_a_file_with_one_bad_event_publishes_nothing(pulsar_broker: PulsarBroker, tmp_path: Path) -> None:
    namespace = _namespace()
    topics = Topics(namespace=namespace)
    good = _event_json()
    bad = json.loads(_event_json())
    bad["entry"]["participant"] = "1"
    path = tmp_path / "events.jsonl"
    path.write_text(good + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    args = ["--pulsar-url", pulsar_broker.url, "--pulsar-namespace", namespace]
    result = cidsync("publish", str(path), *args)
    assert result.returncode == 2
    assert "line 2: event.entry.participant: a participant (ISPB) must be exactly 8 digits" in result.stderr

    client = pulsar_client(pulsar_broker.url)
    try:
        consumer: pulsar_asyncio.Consumer = await subscribe(client, topics.entry_topics())
        marker = tmp_path / "marker.json"
        marker.write_text(_event_json(), encoding="utf-8")
        assert cidsync("publish", str(marker), *args).returncode == 0
        first = parse_event_json((await receive(consumer)).data())
        assert str(first.event_id) == json.loads(marker.read_text())["event_id"]
    finally:
        await client.close()


async def test_generate_publishes_a_valid_history_and_summarises(pulsar_broker: PulsarBroker) -> None:
    namespace = _namespace()
    topics = Topics(namespace=namespace)
    client = pulsar_client(pulsar_broker.url)
    try:
        consumer = await subscribe(client, topics.entry_topics())
        result = cidsync(
            "publish",
            "--generate",
            "300",
            "--rate",
            "0",
            "--participants",
            "12345678,87654321",
            "--pulsar-url",
            pulsar_broker.url,
            "--pulsar-namespace",
            namespace,
            "--json",
        )
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert (summary["sent"], summary["failed"]) == (300, 0)
        assert summary["msgs_per_s"] > 0
        assert 0 < summary["latency_p50_ms"] <= summary["latency_p99_ms"]
        kinds: Counter[str] = Counter()
        key_types = set()
        for _ in range(300):
            event = parse_event_json((await receive(consumer)).data())
            kinds[event.event_type.value] += 1
            key_types.add(event.entry.key_type.value)
        assert set(kinds) == {"entry.created", "entry.updated", "entry.deleted"}
        assert key_types == {"CPF", "CNPJ", "PHONE", "EMAIL", "EVP"}
    finally:
        await client.close()


def test_generate_needs_a_positive_count() -> None:
    result = cidsync("publish", "--generate", "0", "--pulsar-url", "pulsar://127.0.0.1:1")
    assert result.returncode == 2
    assert "N >= 1" in result.stderr


async def test_each_change_is_made_in_dict_first_and_what_dict_refuses_is_not_published(
    pulsar_broker: PulsarBroker, bridge_simulator: BridgeSimulator, participant: str, tmp_path: Path
) -> None:
    namespace = _namespace()
    topics = Topics(namespace=namespace)
    rng = random.Random(participant)
    entry, other = synthetic_entry(rng, participant, KeyType.EVP), synthetic_entry(rng, participant, KeyType.EVP)
    moved = entry.model_copy(update={"account_number": "99887766"})
    created = build_event(EventType.CREATED, entry, "user-9", sequence=1)
    events = [
        created,
        created,  # core published it twice
        build_event(EventType.CREATED, other.model_copy(update={"key": entry.key}), "user-9", sequence=2),
        build_event(EventType.UPDATED, moved, "user-9", sequence=3),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(e.to_json() + "\n" for e in events), encoding="utf-8")
    client = pulsar_client(pulsar_broker.url)
    try:
        consumer = await subscribe(client, topics.entry_topics())
        result = cidsync(
            "publish",
            str(path),
            "--pulsar-url",
            pulsar_broker.url,
            "--pulsar-namespace",
            namespace,
            "--dict-address",
            bridge_simulator.address,
            "--json",
        )
        assert result.returncode == 1
        summary = json.loads(result.stdout)
        assert summary["dict_first"] == {"applied": 2, "already": 1, "refused": 1, "waiting_period": 0}
        assert (summary["sent"], summary["failed"]) == (3, 0)
        assert f"event {events[2].event_id}: DICT refused it, not published" in result.stderr
        received = sorted(
            [parse_event_json((await receive(consumer)).data()) for _ in range(3)], key=lambda e: e.sequence
        )
        assert [e.event_id for e in received] == [created.event_id, created.event_id, events[3].event_id]
        async with BridgeClient(bridge_simulator.address) as bridge:
            assert (await bridge.verify_sync(participant, KeyType.EVP, vsync([cid(moved)]))).ok
    finally:
        await client.close()


async def test_a_paced_file_counts_every_change_dict_was_told(
    pulsar_broker: PulsarBroker, bridge_simulator: BridgeSimulator, participant: str, tmp_path: Path
) -> None:
    """The issue's file: 30 creations, 6 updates, 3 immediate and 3 waiting-period deletes, paced. Each
    change is counted once in DICT's tally (the creations were once missing from it) and every event sent."""
    from cidsync.events import DeletionType

    rng = random.Random(participant)
    entries = [synthetic_entry(rng, participant) for _ in range(30)]
    events = [build_event(EventType.CREATED, e, "user-9", sequence=1) for e in entries]
    events += [
        build_event(EventType.UPDATED, e.model_copy(update={"account_number": "55443322"}), "user-9", sequence=2)
        for e in entries[:6]
    ]
    events += [
        build_event(EventType.DELETED, e, "user-9", sequence=2, deletion_type=DeletionType.IMMEDIATE)
        for e in entries[6:9]
    ]
    events += [
        build_event(EventType.DELETED, e, "user-9", sequence=2, deletion_type=DeletionType.WAITING_PERIOD)
        for e in entries[9:12]
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(e.to_json() + "\n" for e in events), encoding="utf-8")
    result = cidsync(
        "publish",
        str(path),
        "--rate",
        "200",
        "--pulsar-url",
        pulsar_broker.url,
        "--pulsar-namespace",
        _namespace(),
        "--dict-address",
        bridge_simulator.address,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dict_first"] == {"applied": 39, "already": 0, "refused": 0, "waiting_period": 3}
    assert (summary["sent"], summary["failed"]) == (42, 0)
