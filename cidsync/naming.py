"""Names Temporal sees: deterministic workflow ids, search attributes, one-line summaries.

None of them carries personal data (DESIGN.md §5): ids use the entry id and sequence, never the key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from cidsync.entry import KeyType
from cidsync.events import EntryEvent, EventType

PARTICIPANT = SearchAttributeKey.for_keyword("CidParticipant")
KEY_TYPE = SearchAttributeKey.for_keyword("CidKeyType")
EVENT_TYPE = SearchAttributeKey.for_keyword("CidEventType")
OUTCOME = SearchAttributeKey.for_keyword("CidOutcome")
SEARCH_ATTRIBUTES = (PARTICIPANT, KEY_TYPE, EVENT_TYPE, OUTCOME)

_VERB = {EventType.CREATED: "created", EventType.UPDATED: "updated", EventType.DELETED: "deleted"}


def event_workflow_id(event: EntryEvent) -> str:
    """`cid-<created|updated|deleted>-<entry id>-<sequence>`: one run per event, readable, no key."""
    return f"cid-{_VERB[event.event_type]}-{event.entry.id}-{event.sequence}"


def batch_workflow_id(events: Iterable[EntryEvent]) -> str:
    """Derived from the batch's event ids (order-free), so the same batch redelivered is the same run."""
    digest = hashlib.sha256("\n".join(sorted(str(e.event_id) for e in events)).encode()).hexdigest()
    return f"cid-batch-{digest[:32]}"


def event_search_attributes(event: EntryEvent) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(PARTICIPANT, event.entry.participant),
            SearchAttributePair(KEY_TYPE, event.entry.key_type.value),
            SearchAttributePair(EVENT_TYPE, event.event_type.value),
        ]
    )


def event_summary(event: EntryEvent) -> str:
    """The one-line static summary the Web UI shows for a run."""
    deletion = f" ({event.deletion_type.value})" if event.deletion_type else ""
    return (
        f"{event.event_type.value}{deletion}: {event.entry.key_type.value} key of entry {event.entry.id}, "
        f"participant {event.entry.participant}, sequence {event.sequence}"
    )


def reconcile_workflow_id(participant: str, key_type: KeyType) -> str:
    """`reconcile-<participant>-<key type>`: one reconciliation per pair at a time (DESIGN.md §3)."""
    return f"reconcile-{participant}-{key_type.value}"


def reconcile_search_attributes(participant: str, key_type: KeyType) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(PARTICIPANT, participant),
            SearchAttributePair(KEY_TYPE, key_type.value),
            SearchAttributePair(EVENT_TYPE, "reconcile"),
        ]
    )
