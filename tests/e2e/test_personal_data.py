"""Personal data never reaches Temporal, the logs or the metrics (docs/design.md §5), proven on the real stack.

A stack of its own, as `cidsync dev up` starts it (Temporal with its log, Pulsar, Redis, the DICT
simulator), plus a worker and two starters (per-event and batch) as real `cidsync` processes logging at
debug level. Entries with distinctive personal values (names, tax ids, keys of every type, accounts) flow
through both modes, including updates, an IMMEDIATE delete and a WAITING_PERIOD delete that waits and
applies; then DICT alone holds entries of another participant, and `cidsync reconcile --wait` adds them
locally (and tells core, which may and does receive them).

Then everything Temporal keeps is read through its API and decoded: every workflow's full history (every
payload decoded by the data converter, every string of every event), its description (memo, search
attributes, summaries, pending activities), and its current details; plus every process's log, the
worker's metrics endpoint and the CLI's output. None holds any of the personal values, nor a payload with
a personal field's name. Positive controls show the search would find them: the values are on the
`core-events` topic (where they may be), and the decoded inputs do hold each change's key id.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pulsar
import pytest
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from cidsync.entry import AccountType, Entry, KeyType, OwnerType
from cidsync.events import DeletionType, EntryEvent, EventType
from cidsync.key_id import key_id
from cidsync.naming import search_attribute_types
from cidsync.producer import EntryEventProducer, build_event
from cidsync.pulsar_client import pulsar_client
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from cidsync.topics import Topics
from cidsync_tooling.audit import PERSONAL_FIELDS, Corpus, personal_values, read_temporal
from cidsync_tooling.devstack.processes import Launched, free_port
from cidsync_tooling.devstack.servers import start_role
from cidsync_tooling.devstack.spec import (
    BridgeSpec,
    PulsarSpec,
    RedisSpec,
    SimulatorSpec,
    StackSpec,
    StarterSpec,
    TemporalSpec,
    WorkerSpec,
)
from cidsync_tooling.devstack.stack import StackState, down, up
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from tests.e2e.harness import expected_vsyncs, local_vsyncs
from tests.helpers.cli_runner import cidsync
from tests.helpers.eventually import eventually
from tests.telemetry.otlp_receiver import Received, http_receiver

SECRET = "personal-data-test-secret"
QUEUE = "pii"
PER_EVENT, BATCH = "public/pii-per-event", "public/pii-batch"
WAITING_PERIOD_SECONDS = 3


def canary(n: int, participant: str, key_type: KeyType) -> Entry:
    """An entry whose every personal value is distinctive: found anywhere, it can only have come from here."""
    legal = key_type is KeyType.CNPJ or (key_type is not KeyType.CPF and n % 3 == 0)
    tax_id = f"{'98' if legal else '97'}{'4' * 3}{n:0{9 if legal else 6}d}"
    keys = {
        KeyType.CPF: tax_id,
        KeyType.CNPJ: tax_id,
        KeyType.PHONE: f"+5561988{n:06d}",
        KeyType.EMAIL: f"canario.pessoal.{n}@exemplo-sigiloso.com.br",
        KeyType.EVP: str(uuid.UUID(int=0xC0FFEE_0000_0000_0000_0000_0000_0000 + n, version=4)),
    }
    return Entry(
        id=uuid.uuid4(),
        request_id=uuid.uuid4(),
        key_type=key_type,
        key=keys[key_type],
        participant=participant,
        branch=f"{n % 10_000:04d}",
        account_number=f"8086{n:012d}",
        account_type=AccountType.CACC,
        account_opened_at=datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC),
        owner_type=OwnerType.LEGAL_PERSON if legal else OwnerType.NATURAL_PERSON,
        owner_name=f"Zuleica Canária Sigilosa {n}" if not legal else f"Empresa Canária Sigilosa {n} S.A.",
        owner_trade_name=f"Fantasia Canária {n}" if legal else None,
        owner_tax_id=tax_id,
    )


@dataclass
class Stack:
    root: Path
    state: StackState
    metrics: str
    roles: list[Launched]
    spans: Received
    starter_metrics: list[str]

    @property
    def env(self) -> dict[str, str]:
        return {
            "CIDSYNC_STATE_DIR": str(self.root / "state"),
            "CIDSYNC_KEY_SECRET": SECRET,
            "CIDSYNC_TASK_QUEUE": QUEUE,
        }

    def logs(self) -> Iterator[Path]:
        yield from sorted((self.root / "state" / "logs").glob("*.log"))


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    spec = StackSpec(
        state_dir=tmp_path / "state",
        temporal=TemporalSpec(port=0, ui_port=None, log_level="info", search_attributes=search_attribute_types()),
        pulsar=PulsarSpec(port=0, data_dir=tmp_path / "pulsar"),
        redis=RedisSpec(port=0, data_dir=tmp_path / "redis", appendonly=False),
        simulator=SimulatorSpec(port=0, api_port=0, data_dir=None, file_delay_seconds=0.2),
        bridge=BridgeSpec(port=0, log_level="debug"),  # the workers reach DICT through bridge serve
        worker=WorkerSpec(enabled=False),
        starter=StarterSpec(enabled=False),
    )
    state = await asyncio.to_thread(up, spec, tmp_path / "temporal-dev.yaml")
    metrics = f"127.0.0.1:{free_port()}"
    starter_metrics = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    logs = tmp_path / "state" / "logs"
    receiving = http_receiver()
    endpoint, spans = receiving.__enter__()
    # Every role traces to a receiver here, and the worker logs JSON: what they export is read back too.
    common = {
        "CIDSYNC_KEY_SECRET": SECRET,
        "CIDSYNC_WAITING_PERIOD_DAYS": str(WAITING_PERIOD_SECONDS / 86_400),
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    roles = []
    try:
        roles.append(
            start_role(
                "worker",
                ["--task-queue", QUEUE, "--log-level", "debug", "--metrics-bind", metrics],
                state_dir=spec.state_dir,
                env={**common, "CIDSYNC_LOG_FORMAT": "json"},
                log=logs / "worker.log",
            )
        )
        starters = (("starter-per-event", PER_EVENT, "per-event"), ("starter-batch", BATCH, "batch"))
        for (name, namespace, mode), bind in zip(starters, starter_metrics, strict=True):
            options = [
                "--task-queue",
                QUEUE,
                "--log-level",
                "debug",
                "--mode",
                mode,
                "--subscription",
                name,
                "--metrics-bind",
                bind,
            ]
            roles.append(
                start_role(
                    "starter",
                    options,
                    state_dir=spec.state_dir,
                    log=logs / f"{name}.log",
                    env={**common, "CIDSYNC_PULSAR_NAMESPACE": namespace},
                )
            )
        yield Stack(tmp_path, state, metrics, roles, spans, starter_metrics)
    finally:
        receiving.__exit__(None, None, None)
        for role in reversed(roles):
            role.stop()
        await asyncio.to_thread(down, spec.state_dir)
        shutil.rmtree(tmp_path / "pulsar", ignore_errors=True)


def history_of(entries: list[Entry], first_sequence: int) -> list[EntryEvent]:
    """Creations, an update of every other entry (new name and account: a new CID), an IMMEDIATE delete
    and a WAITING_PERIOD delete."""
    events, sequence = [], first_sequence
    for n, entry in enumerate(entries):
        events.append(build_event(EventType.CREATED, entry, "user-pii", sequence=(sequence := sequence + 1)))
        if n % 2:
            moved = entry.model_copy(
                update={
                    "account_number": entry.account_number[:-1] + "9",
                    "owner_name": entry.owner_name + " Atualizada",
                }
            )
            events.append(build_event(EventType.UPDATED, moved, "user-pii", sequence=(sequence := sequence + 1)))
    for entry, deletion in zip(entries[:2], (DeletionType.IMMEDIATE, DeletionType.WAITING_PERIOD), strict=True):
        events.append(
            build_event(
                EventType.DELETED, entry, "user-pii", deletion_type=deletion, sequence=(sequence := sequence + 1)
            )
        )
    return events


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def wait_until_applied(store: CIDStore, participants: list[str], expected: object) -> None:
    await eventually(
        lambda: local_vsyncs(store, participants), lambda seen: seen == expected, "every event applied", timeout=120
    )


async def test_no_personal_value_reaches_temporal_logs_or_metrics(stack: Stack) -> None:
    ingested, from_dict = f"{random.randrange(10**8):08d}", f"{random.randrange(10**8):08d}"
    per_event_entries = [canary(n, ingested, k) for n, k in enumerate(list(KeyType) * 2)]
    batch_entries = [canary(100 + n, ingested, k) for n, k in enumerate(list(KeyType) * 2)]
    dict_entries = [canary(200 + n, from_dict, k) for n, k in enumerate([KeyType.EMAIL, KeyType.CPF] * 3)]
    per_event, batch = history_of(per_event_entries, 1_000), history_of(batch_entries, 2_000)
    all_entries = [e.entry for e in per_event + batch] + dict_entries
    values = personal_values(all_entries)
    cli_output: list[str] = []

    # Ingestion, both modes.
    for namespace, events in ((PER_EVENT, per_event), (BATCH, batch)):
        async with EntryEventProducer(
            pulsar_client(stack.state.pulsar_url or ""), topics=Topics(namespace=namespace), owns_client=True
        ) as producer:
            await producer.start()
            for event in events:
                await producer.publish_event(event)
    store = CIDStore(redis_client(stack.state.redis_url or ""), SECRET.encode())
    try:
        await wait_until_applied(store, [ingested], expected_vsyncs(per_event + batch))
    finally:
        await store.close()

    # Reconciliation: DICT alone holds `from_dict`'s entries; two runs add them locally and tell core.
    assert stack.state.simulator_address is not None
    async with SimulatorAdmin(stack.state.simulator_address) as admin:
        await admin.load(dict_entries)
    core = pulsar_client(stack.state.pulsar_url or "")
    consumer = await core.subscribe(
        Topics().full(Topics().core_events), "pii-core", initial_position=pulsar.InitialPosition.Earliest
    )
    for key_type in ("EMAIL", "CPF"):
        run = await asyncio.to_thread(
            cidsync,
            "reconcile",
            "--participant",
            from_dict,
            "--key-type",
            key_type,
            "--wait",
            "--grace",
            "1",
            env=stack.env,
        )
        assert run.returncode == 0, run.stderr
        outcome = json.loads(run.stdout)
        assert (outcome["outcome"], outcome["added"]) == ("REPAIRED", 3)
        cli_output += [run.stdout, run.stderr]
        progress = await asyncio.to_thread(cidsync, "reconcile", "progress", outcome["workflow_id"], env=stack.env)
        assert progress.returncode == 0, progress.stderr
        cli_output += [progress.stdout, progress.stderr]
    shown = await asyncio.to_thread(cidsync, "vsync", "--json", env=stack.env)
    cli_output += [shown.stdout, shown.stderr]
    core_texts: list[str] = []
    async with asyncio.timeout(30):
        while len(core_texts) < 6 + 2:  # 6 entries added, 2 completions
            message = await consumer.receive()
            await consumer.acknowledge(message)
            core_texts.append(message.data().decode())
    await core.close()

    # Read back everything Temporal keeps, every log, the metrics and the CLI's output.
    corpus = Corpus()
    client = await Client.connect(stack.state.temporal_address or "", data_converter=pydantic_data_converter)
    histories = await read_temporal(client, corpus)

    # The operator's view: the WAITING_PERIOD delete says how its wait ended; batch runs name their pair.
    async def listed(query: str) -> list[str]:
        return [w.workflow_type async for w in client.list_workflows(query)]

    assert await listed('CidPhase="applied"') == ["DeleteCID"] * 2  # one per mode: never batched
    assert set(await listed(f'CidParticipants="{ingested}" AND CidKeyTypes="EVP"')) == {"ApplyCIDBatch"}
    metrics = await asyncio.to_thread(scrape, f"http://{stack.metrics}/metrics")
    corpus.add("worker metrics", metrics)
    for bind in stack.starter_metrics:
        corpus.add(f"starter metrics {bind}", await asyncio.to_thread(scrape, f"http://{bind}/metrics"))
    for text in cli_output:
        corpus.add("cli", text)
    for role in stack.roles:
        role.stop()  # flushed and closed: their logs are complete
    for log in stack.logs():
        corpus.add(f"log:{log.name}", log.read_text(errors="replace"))
    spans = stack.spans.snapshot()  # the roles flushed their spans when they stopped
    for span in spans:
        corpus.add(f"span:{span.service}:{span.name}", " ".join([span.name, *map(str, span.attributes.values())]))

    # Not vacuous: every kind of run is there, the WAITING_PERIOD delete waited on a durable timer, and the
    # reconciliations repaired; the metrics are Temporal's; the logs were written at debug level.
    kinds = {name: len(found) for name, found in histories.items()}
    assert kinds.get("CreateCID") == len(per_event_entries)
    assert kinds.get("UpdateCID") == len(per_event_entries) // 2
    assert kinds.get("DeleteCID") == 3  # two per-event, and batch mode's WAITING_PERIOD delete (never batched)
    assert kinds.get("ApplyCIDBatch", 0) >= 1
    assert kinds.get("ReconcileVSync") == 2
    timers = [
        e for h in histories["DeleteCID"] for e in h.events if e.event_type == HistoryEventType.EVENT_TYPE_TIMER_FIRED
    ]
    assert timers
    assert "temporal_" in metrics
    assert {"redis apply", "redis apply batch", "start batch"} <= {span.name for span in spans}
    assert any(span.name.startswith("cidsync.bridge.v2.DictBridge/") for span in spans)
    assert any(span.name == "send core-events" for span in spans)
    json_lines = [json.loads(line) for line in corpus.texts["log:worker.log"][0].splitlines() if line.startswith("{")]
    assert len(json_lines) > 10
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in json_lines)
    assert any("DEBUG" in text for text in corpus.texts["log:worker.log"])
    assert any("DEBUG" in text for text in corpus.texts["log:bridge.log"])  # bridge serve, DICT's entries in hand
    assert {"log:temporal.log", "log:starter-per-event.log", "log:starter-batch.log", "log:bridge.log"} <= set(
        corpus.texts
    )
    # Positive controls: the values did flow (core received the reconciled entries, as it may), and the
    # decoded inputs carry each change's key id: a leak would have been found.
    core_corpus = Corpus({"core-events": core_texts})
    assert all(core_corpus.where(value) for value in personal_values(dict_entries))
    temporal_texts = {w: t for w, t in corpus.texts.items() if w.startswith("temporal:")}
    decoded = Corpus(temporal_texts)
    for entry in per_event_entries:
        assert decoded.where(key_id(SECRET.encode(), entry.key_type, entry.key)), entry.id

    # An operator finds a key's runs without the key: its key id (`cidsync key-id`), or the entry id.
    entry = per_event_entries[3]  # created, then updated (0 and 1 are deleted)
    named = await asyncio.to_thread(
        cidsync, "key-id", "--key-type", entry.key_type.value, stdin=entry.key, env=stack.env
    )
    by_key = [w.workflow_type async for w in client.list_workflows(f'CidKeyId="{named.stdout.strip()}"')]
    by_entry = [w.workflow_type async for w in client.list_workflows(f'CidEntryId="{entry.id}"')]
    assert sorted(by_key) == sorted(by_entry) == ["CreateCID", "UpdateCID"]

    leaks = {value: corpus.where(value) for value in values}
    assert {value: where for value, where in leaks.items() if where} == {}
    assert corpus.payload_fields & PERSONAL_FIELDS == set()
