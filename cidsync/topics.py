"""The Pulsar topics of the contract with core banking (docs/design.md §2), in one place.

The producer and the starter bridge both route by these, so a renamed topic cannot split them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cidsync.events import DeletionType, EntryEvent, EventType


@dataclass(frozen=True)
class Topics:
    namespace: str = "public/default"  # tenant/namespace
    created: str = "dict.entries.created"
    updated: str = "dict.entries.updated"
    deleted_immediate: str = "dict.entries.deleted.immediate"
    deleted_waiting_period: str = "dict.entries.deleted.waiting_period"
    dead_letter: str = "dict.entries.dlq"
    core_events: str = "core-events"

    def suffixed(self, suffix: str) -> Topics:
        """The entry and dead-letter topics with `-suffix` added: topics of their own for a test or a bench
        sharing one broker."""
        return replace(
            self,
            created=f"{self.created}-{suffix}",
            updated=f"{self.updated}-{suffix}",
            deleted_immediate=f"{self.deleted_immediate}-{suffix}",
            deleted_waiting_period=f"{self.deleted_waiting_period}-{suffix}",
            dead_letter=f"{self.dead_letter}-{suffix}",
        )

    def full(self, name: str) -> str:
        return f"persistent://{self.namespace}/{name}"

    def for_event(self, event: EntryEvent) -> str:
        """Where an event is published: by its type, and a delete by its deletion type."""
        if event.event_type is EventType.CREATED:
            return self.full(self.created)
        if event.event_type is EventType.UPDATED:
            return self.full(self.updated)
        if event.deletion_type is DeletionType.WAITING_PERIOD:
            return self.full(self.deleted_waiting_period)
        return self.full(self.deleted_immediate)

    def entry_topics(self) -> list[str]:
        """The four topics the starter consumes, as an explicit list (no regex subscriptions)."""
        return [self.full(t) for t in (self.created, self.updated, self.deleted_immediate, self.deleted_waiting_period)]

    @property
    def dead_letter_topic(self) -> str:
        return self.full(self.dead_letter)
