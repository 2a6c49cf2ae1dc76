"""Names Temporal sees: deterministic workflow ids, search attributes, one-line summaries.

None of them carries personal data (docs/design.md §5): ids use the entry id and sequence, never the key; a
key is named by its key id (a keyed hash, `cidsync key-id`), so an operator can find its runs without it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from cidsync.change import CIDChange
from cidsync.entry import KeyType
from cidsync.events import DeletionType, EventType

PARTICIPANT = SearchAttributeKey.for_keyword("CidParticipant")
KEY_TYPE = SearchAttributeKey.for_keyword("CidKeyType")
EVENT_TYPE = SearchAttributeKey.for_keyword("CidEventType")
OUTCOME = SearchAttributeKey.for_keyword("CidOutcome")
KEY_ID = SearchAttributeKey.for_keyword("CidKeyId")
ENTRY_ID = SearchAttributeKey.for_keyword("CidEntryId")
# Where a long run is: a reconciliation's phase ("awaiting approval", ...), a WAITING_PERIOD delete's wait.
PHASE = SearchAttributeKey.for_keyword("CidPhase")
AWAITING_APPROVAL = "awaiting approval"  # the phase of a reconciliation an operator must answer
# What a batch run touches: every participant and key type among its events.
PARTICIPANTS = SearchAttributeKey.for_keyword_list("CidParticipants")
KEY_TYPES = SearchAttributeKey.for_keyword_list("CidKeyTypes")
SEARCH_ATTRIBUTES = (PARTICIPANT, KEY_TYPE, EVENT_TYPE, OUTCOME, KEY_ID, ENTRY_ID, PHASE, PARTICIPANTS, KEY_TYPES)
WAITING_PERIOD_PHASE = "waiting period"
_TYPE_NAMES = {"KEYWORD": "Keyword", "KEYWORD_LIST": "KeywordList"}


def search_attribute_types() -> dict[str, str]:
    """Name -> type as `temporal operator search-attribute create --type` and temporal-dev.yaml spell it."""
    return {
        key.name: _TYPE_NAMES[key.indexed_value_type.name.removeprefix("INDEXED_VALUE_TYPE_")]
        for key in SEARCH_ATTRIBUTES
    }


_VERB = {EventType.CREATED: "created", EventType.UPDATED: "updated", EventType.DELETED: "deleted"}


def event_workflow_id(change: CIDChange) -> str:
    """`cid-<created|updated|deleted>-<entry id>-<sequence>`: one run per event, readable, no key."""
    return f"cid-{_VERB[change.event_type]}-{change.entry_id}-{change.sequence}"


def batch_workflow_id(changes: Iterable[CIDChange]) -> str:
    """Derived from the batch's event ids (order-free), so the same batch redelivered is the same run."""
    digest = hashlib.sha256("\n".join(sorted(str(c.event_id) for c in changes)).encode()).hexdigest()
    return f"cid-batch-{digest[:32]}"


def event_search_attributes(change: CIDChange) -> TypedSearchAttributes:
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(PARTICIPANT, change.participant),
        SearchAttributePair(KEY_TYPE, change.key_type.value),
        SearchAttributePair(EVENT_TYPE, change.event_type.value),
        SearchAttributePair(KEY_ID, change.key_id),
        SearchAttributePair(ENTRY_ID, str(change.entry_id)),
    ]
    if change.deletion_type is DeletionType.WAITING_PERIOD:
        # Searchable from its start: `CidPhase="waiting period" AND ExecutionStatus="Running"` lists the
        # deletes DICT's waiting period holds, which would otherwise look like stuck runs.
        pairs.append(SearchAttributePair(PHASE, WAITING_PERIOD_PHASE))
    return TypedSearchAttributes(pairs)


def batch_search_attributes(changes: Iterable[CIDChange]) -> TypedSearchAttributes:
    """`CidParticipants` and `CidKeyTypes` of a batch run: find the runs that touched a pair."""
    changes = list(changes)
    return TypedSearchAttributes(
        [
            SearchAttributePair(PARTICIPANTS, sorted({c.participant for c in changes})),
            SearchAttributePair(KEY_TYPES, sorted({c.key_type.value for c in changes})),
        ]
    )


def event_summary(change: CIDChange) -> str:
    """The one-line static summary the Web UI shows for a run."""
    deletion = f" ({change.deletion_type.value})" if change.deletion_type else ""
    return (
        f"{change.event_type.value}{deletion}: {change.key_type.value} key {change.key_id} of entry "
        f"{change.entry_id}, participant {change.participant}, sequence {change.sequence}"
    )


def reconcile_workflow_id(participant: str, key_type: KeyType) -> str:
    """`reconcile-<participant>-<key type>`: one reconciliation per pair at a time (docs/design.md §3)."""
    return f"reconcile-{participant}-{key_type.value}"


def _pair_run_attributes(participant: str, key_type: KeyType, kind: str) -> TypedSearchAttributes:
    """A run that works on one pair: `CidEventType` says which kind (`reconcile`, `follow`)."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(PARTICIPANT, participant),
            SearchAttributePair(KEY_TYPE, key_type.value),
            SearchAttributePair(EVENT_TYPE, kind),
        ]
    )


def reconcile_search_attributes(participant: str, key_type: KeyType) -> TypedSearchAttributes:
    return _pair_run_attributes(participant, key_type, "reconcile")


def reconcile_summary(participant: str, key_type: KeyType, trigger: str) -> str:
    return f"verify and reconcile the {key_type.value} VSync of {participant} ({trigger})"


def follow_workflow_id(participant: str, key_type: KeyType) -> str:
    """`follow-<participant>-<key type>`: the one follower of a pair's DICT event log."""
    return f"follow-{participant}-{key_type.value}"


def follow_search_attributes(participant: str, key_type: KeyType) -> TypedSearchAttributes:
    return _pair_run_attributes(participant, key_type, "follow")


def follow_summary(participant: str, key_type: KeyType) -> str:
    return f"follow DICT's CID event log of {participant} {key_type.value} and repair divergences"
