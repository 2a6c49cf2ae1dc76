"""Reading back everything Temporal keeps, decoded, to prove no personal value is in it (docs/design.md §5).

Every workflow of a namespace: its full history (every payload decoded by the data converter, every
string of every event), its description (memo, search attributes, summaries, pending activities) and its
current details. The personal-data test and the chaos run (`make chaos`) search what this returns for the
personal values of the entries they published, and for payloads that even name a personal field.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.enums.v1 import VersioningBehavior
from temporalio.api.query.v1 import WorkflowQuery
from temporalio.api.workflow.v1 import WorkflowExecutionVersioningInfo
from temporalio.api.workflowservice.v1 import QueryWorkflowRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.client import WorkflowExecution as ListedRun
from temporalio.contrib.pydantic import pydantic_data_converter

from cidsync.entry import Entry
from workers.deployment import current_build_id

# The entry's personal fields (docs/design.md §5): no decoded payload may even name them.
PERSONAL_FIELDS = {"key", "owner_name", "owner_trade_name", "owner_tax_id", "account_number", "branch", "entry"}


def personal_values_by_kind(entries: Iterable[Entry]) -> dict[str, set[str]]:
    """The values that say who someone is, by kind: keys, tax ids, names. (Account numbers, 4 to 12
    digits, and branches are too short to tell from other numbers by value: `personal_values` has them.)"""
    found: dict[str, set[str]] = {"key": set(), "tax id": set(), "name": set()}
    for e in entries:
        found["key"].add(e.key)
        found["tax id"].add(e.owner_tax_id)
        found["name"] |= {e.owner_name, *([e.owner_trade_name] if e.owner_trade_name else [])}
    return found


def personal_values(entries: Iterable[Entry]) -> set[str]:
    """What must never leave the allowed places. The branch (4 digits) is checked by field name only:
    as a value it is too short to tell from any other number."""
    values: set[str] = set()
    for e in entries:
        values |= {e.key, e.owner_name, e.owner_tax_id, e.account_number}
        if e.owner_trade_name:
            values.add(e.owner_trade_name)
    return values


@dataclass
class Corpus:
    """Every text read back, by where it came from."""

    texts: dict[str, list[str]] = field(default_factory=dict)
    payload_fields: set[str] = field(default_factory=set)
    # Closed runs pinned to a version no longer current (after an upgrade), whose workers may be gone: not
    # queried (their history and description are read).
    unqueried: list[str] = field(default_factory=list)

    def add(self, where: str, text: str) -> None:
        self.texts.setdefault(where, []).append(text)

    def leaked(self, values: Iterable[str]) -> dict[str, list[str]]:
        """Of `values`, those found in the texts as a whole token (a tax id inside a longer number, or a name
        inside a longer name, does not count), with where; in one pass over the texts, so a search of tens
        of thousands of values through thousands of histories stays linear."""
        wanted = set(values)
        found: dict[str, set[str]] = {}
        for where, texts in self.texts.items():
            for text in texts:
                for token in _tokens(text):
                    if token in wanted:
                        found.setdefault(token, set()).add(where)
        return {value: sorted(places) for value, places in found.items()}

    def where(self, value: str) -> list[str]:
        forms = {value, json.dumps(value)[1:-1]}  # as written, and as JSON escapes it (\u00e1 for á)
        return sorted({w for w, texts in self.texts.items() for t in texts for f in forms if f in t})


_TOKEN = re.compile(r"\+?[\w.@+-]+")
_WORDS = re.compile(r"[^\W\d_]+")


def _tokens(text: str) -> Iterator[str]:
    """Every whole token (digit runs, UUIDs, e-mail addresses, phone numbers), and every run of two to six
    consecutive words, as a name would be written."""
    for token in _TOKEN.findall(text):
        yield token
        yield token.strip(".-")
        yield from re.findall(r"\d+", token)
    words = _WORDS.findall(text)
    for size in range(2, 7):
        for start in range(len(words) - size + 1):
            yield " ".join(words[start : start + size])


def _json_fields(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for name, inner in value.items():
            yield str(name)
            yield from _json_fields(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _json_fields(inner)


def read_message(message: Message, where: str, corpus: Corpus) -> None:
    """Every string and bytes field of a Temporal API message, recursively; every payload decoded."""
    if isinstance(message, Payload):
        corpus.add(where, message.data.decode("utf-8", "replace"))
        for name, raw in message.metadata.items():
            corpus.add(where, f"{name}={raw.decode('utf-8', 'replace')}")
        if message.data:
            value = pydantic_data_converter.payload_converter.from_payloads([message])[0]
            corpus.add(where, json.dumps(value, ensure_ascii=False, default=str))
            corpus.payload_fields |= set(_json_fields(value))
        return
    for descriptor, value in message.ListFields():
        if descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
                for name, inner in value.items():
                    corpus.add(where, str(name))
                    if isinstance(inner, Message):
                        read_message(inner, where, corpus)
                    else:
                        corpus.add(where, str(inner))
            elif descriptor.is_repeated:
                for inner in value:
                    read_message(inner, where, corpus)
            else:
                read_message(value, where, corpus)
        elif descriptor.type == FieldDescriptor.TYPE_STRING:
            for text in value if descriptor.is_repeated else [value]:
                corpus.add(where, text)
        elif descriptor.type == FieldDescriptor.TYPE_BYTES:
            for raw in value if descriptor.is_repeated else [value]:
                corpus.add(where, raw.decode("utf-8", "replace"))


async def read_temporal(client: Client, corpus: Corpus, *, at_once: int = 8) -> dict[str, list[Any]]:
    """Every workflow of the namespace: history, description and current details. Returns the histories
    by workflow type, in the order listed. `at_once` workflows are read concurrently: reading is three
    calls each, one of them a query a worker answers by replaying the run: one after another, 1,231
    workflows took 115 s of a reduced chaos run inside make test."""
    current: dict[str, str | None] = {}  # each deployment's current build id
    listed = [item async for item in client.list_workflows()]
    histories: list[Any] = [None] * len(listed)
    slots = asyncio.Semaphore(at_once)

    async def read(index: int, item: ListedRun) -> None:
        async with slots:
            histories[index] = await _read_one(client, item, corpus, current)

    async with asyncio.TaskGroup() as group:
        for index, item in enumerate(listed):
            group.create_task(read(index, item))
    by_type: dict[str, list[Any]] = {}
    for item, history in zip(listed, histories, strict=True):
        by_type.setdefault(item.workflow_type, []).append(history)
    return by_type


async def _read_one(client: Client, listed: ListedRun, corpus: Corpus, current: dict[str, str | None]) -> Any:
    handle = client.get_workflow_handle(listed.id, run_id=listed.run_id)
    where = f"temporal:{listed.workflow_type}:{listed.id}"
    corpus.add(where, listed.id)
    history = await handle.fetch_history()
    for event in history.events:
        read_message(event, where, corpus)
    description = (await handle.describe()).raw_description
    read_message(description, where, corpus)
    if await _retired(client, listed.status, description.workflow_execution_info.versioning_info, current):
        corpus.unqueried.append(where)
    else:
        metadata = await client.workflow_service.query_workflow(  # the current details, among others
            QueryWorkflowRequest(
                namespace=client.namespace,
                execution=WorkflowExecution(workflow_id=listed.id, run_id=listed.run_id),
                query=WorkflowQuery(query_type="__temporal_workflow_metadata"),
            )
        )
        read_message(metadata, where, corpus)
    return history


async def _retired(
    client: Client,
    status: WorkflowExecutionStatus | None,
    versioning: WorkflowExecutionVersioningInfo,
    current: dict[str, str | None],
) -> bool:
    """A closed run pinned to a version that is no longer current: Temporal sends its queries to that
    version's workers alone, which an upgrade has stopped, and answers only once its query times out."""
    version = versioning.deployment_version
    if (
        status is WorkflowExecutionStatus.RUNNING
        or versioning.behavior != VersioningBehavior.VERSIONING_BEHAVIOR_PINNED
    ):
        return False
    if version.deployment_name not in current:
        current[version.deployment_name] = await current_build_id(client, version.deployment_name)
    return current[version.deployment_name] != version.build_id
