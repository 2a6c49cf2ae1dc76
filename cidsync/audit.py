"""Reading back everything Temporal keeps, decoded, to prove no personal value is in it (DESIGN.md §5).

Every workflow of a namespace: its full history (every payload decoded by the data converter, every
string of every event), its description (memo, search attributes, summaries, pending activities) and its
current details. The personal-data test and the chaos run (`make chaos`) search what this returns for the
personal values of the entries they published, and for payloads that even name a personal field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.query.v1 import WorkflowQuery
from temporalio.api.workflowservice.v1 import QueryWorkflowRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from cidsync.entry import Entry

# The entry's personal fields (DESIGN.md §5): no decoded payload may even name them.
PERSONAL_FIELDS = {"key", "owner_name", "owner_trade_name", "owner_tax_id", "account_number", "branch", "entry"}


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

    def add(self, where: str, text: str) -> None:
        self.texts.setdefault(where, []).append(text)

    def where(self, value: str) -> list[str]:
        forms = {value, json.dumps(value)[1:-1]}  # as written, and as JSON escapes it (\u00e1 for á)
        return sorted({w for w, texts in self.texts.items() for t in texts for f in forms if f in t})


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


async def read_temporal(client: Client, corpus: Corpus) -> dict[str, list[Any]]:
    """Every workflow of the namespace: history, description and current details. Returns the histories
    by workflow type."""
    by_type: dict[str, list[Any]] = {}
    async for listed in client.list_workflows():
        handle = client.get_workflow_handle(listed.id, run_id=listed.run_id)
        where = f"temporal:{listed.workflow_type}:{listed.id}"
        corpus.add(where, listed.id)
        history = await handle.fetch_history()
        for event in history.events:
            read_message(event, where, corpus)
        read_message((await handle.describe()).raw_description, where, corpus)
        metadata = await client.workflow_service.query_workflow(  # the current details, among others
            QueryWorkflowRequest(
                namespace=client.namespace,
                execution=WorkflowExecution(workflow_id=listed.id, run_id=listed.run_id),
                query=WorkflowQuery(query_type="__temporal_workflow_metadata"),
            )
        )
        read_message(metadata, where, corpus)
        by_type.setdefault(listed.workflow_type, []).append(history)
    return by_type
