"""The starter's receive loop and dispatchers against a fake consumer: what is acked, started,
redelivered or dead-lettered, in which order and under which bound, without a broker or Temporal."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pulsar
import pytest
from temporalio.service import RPCError, RPCStatusCode

from cidsync.change import CIDChange
from cidsync.entry import KeyType
from cidsync.events import DeletionType, EntryEvent, EventType
from cidsync.producer import build_event
from cidsync_tooling.synthetic import synthetic_entry
from starters.consuming import Message
from starters.options import Mode, StarterConfig
from starters.receive_loop import ReceiveLoop, StarterHalted
from starters.redelivery import INVALID_EVENT, REDELIVERIES_EXHAUSTED, RedeliveryPolicy
from starters.settling import Settler, StarterStats
from tests.helpers.eventually import eventually_true

TOPIC = "persistent://cidsync/events/entry-created"
SECRET = b"receive-loop-test"


@dataclass
class FakeMessage:
    payload: bytes
    event_id: str
    count: int = 0

    def data(self) -> bytes:
        return self.payload

    def properties(self) -> dict[str, str]:
        return {"event_id": self.event_id}

    def topic_name(self) -> str:
        return TOPIC

    def message_id(self) -> object:
        return f"id-{self.event_id}"

    def redelivery_count(self) -> int:
        return self.count

    def partition_key(self) -> str:
        return self.event_id


@dataclass
class FakeReceiver:
    """A topic's consumer: hands over up to `per_receive` queued messages; a nack queues it again with its
    redelivery count one higher, as the broker does."""

    queue: list[Message]
    per_receive: int = 100
    fail_receives: int = 0  # the first receives fail, as a broken connection does
    inflation: int = 1  # how much a nack raises the redelivery count (a batch's count rises with each batch-mate)
    topic: str = "entry-created"
    acked: list[Message] = field(default_factory=list)
    nacked: list[Message] = field(default_factory=list)
    receives: int = 0

    def connected(self) -> bool:
        return True

    async def receive(self) -> list[Message]:
        self.receives += 1
        if self.fail_receives:
            self.fail_receives -= 1
            raise ConnectionError("broker gone")
        if not self.queue:
            await asyncio.sleep(0.005)
            return []
        taken, self.queue = self.queue[: self.per_receive], self.queue[self.per_receive :]
        return taken

    def acknowledge(self, message: Message) -> None:
        self.acked.append(message)

    async def negative_acknowledge(self, message: Message) -> None:
        self.nacked.append(message)
        self.queue.append(
            FakeMessage(message.data(), event_id_of(message), message.redelivery_count() + self.inflation)
        )

    async def close(self) -> None:
        pass


@dataclass
class FakeDeadLetters:
    sent: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    fail_sends: int = 0  # the first sends fail, as they do while the broker restarts

    async def send(self, content: bytes, *, properties: dict[str, str], partition_key: str | None) -> None:
        if self.fail_sends:
            self.fail_sends -= 1
            raise pulsar.Timeout("send timed out")
        self.sent.append((content, properties))

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass


@dataclass
class FakeStarts:
    """Temporal's side: records what was started; `fail(change)` may raise instead."""

    fail: Callable[[CIDChange], BaseException | None] = lambda _: None
    events: list[CIDChange] = field(default_factory=list)
    batches: list[list[CIDChange]] = field(default_factory=list)
    release: asyncio.Event | None = None  # when set: each start waits for it
    under_way: int = 0
    most_under_way: int = 0

    async def _started(self, changes: Sequence[CIDChange]) -> None:
        self.under_way += 1
        self.most_under_way = max(self.most_under_way, self.under_way)
        try:
            if self.release is not None:
                await self.release.wait()
            for change in changes:
                if (error := self.fail(change)) is not None:
                    raise error
        finally:
            self.under_way -= 1

    async def start_event(self, change: CIDChange) -> None:
        await self._started([change])
        self.events.append(change)

    async def start_batch(self, changes: Sequence[CIDChange]) -> None:
        await self._started(changes)
        self.batches.append(list(changes))


@dataclass
class FakeMarks:
    applied: set[str] = field(default_factory=set)  # event ids

    async def is_marked(self, participant: str, key_type: KeyType, event_id: str) -> bool:
        return event_id in self.applied

    async def marked(self, changes: Sequence[CIDChange]) -> list[bool]:
        return [str(c.event_id) in self.applied for c in changes]


def events(count: int, seed: int = 7, deletion: DeletionType | None = None) -> list[EntryEvent]:
    rng = random.Random(seed)
    made = []
    for sequence in range(1, count + 1):
        entry = synthetic_entry(rng, "12345678", KeyType.EVP)
        if deletion is None:
            made.append(build_event(EventType.CREATED, entry, "test", sequence=sequence))
        else:
            made.append(build_event(EventType.DELETED, entry, "test", sequence=sequence, deletion_type=deletion))
    return made


def message(event: EntryEvent) -> Message:
    return FakeMessage(event.to_json().encode(), str(event.event_id))


def event_id_of(message: Message) -> str:
    return message.properties()["event_id"]


def ids(messages: list[Message]) -> list[str]:
    return [event_id_of(m) for m in messages]


def counts(messages: list[Message]) -> list[int]:
    return [m.redelivery_count() for m in messages]


@dataclass
class Starter:
    receiver: FakeReceiver
    starts: FakeStarts
    marks: FakeMarks
    dead_letters: FakeDeadLetters
    loop: ReceiveLoop

    @property
    def stats(self) -> StarterStats:
        return self.loop.settler.stats

    async def run_until(self, done: Callable[[], bool], what: str) -> None:
        """Run the loop until `done()` holds (then stop it and let it drain), or until it ends by itself."""
        stop = asyncio.Event()
        running = asyncio.ensure_future(self.loop.run(stop))
        try:
            await eventually_true(lambda: done() or running.done(), what)
        finally:
            stop.set()
            await running


def starter(
    queue: list[Message],
    *,
    starts: FakeStarts | None = None,
    marks: FakeMarks | None = None,
    **config: Any,
) -> Starter:
    config = {"backoff_base": timedelta(milliseconds=5), "backoff_max": timedelta(milliseconds=20)} | config
    settings = StarterConfig(**config)
    receiver = FakeReceiver(queue)
    dead_letters = FakeDeadLetters()
    starts = starts or FakeStarts()
    marks = marks or FakeMarks()
    policy = RedeliveryPolicy(
        settings.max_redeliveries, settings.backoff_base, settings.backoff_max, settings.halt_after
    )
    settler = Settler({TOPIC: receiver}, dead_letters, policy, StarterStats())
    loop = ReceiveLoop({TOPIC: receiver}, settler, marks, starts, SECRET, settings)
    return Starter(receiver, starts, marks, dead_letters, loop)


async def test_each_event_is_started_then_acked_and_only_its_minimal_change_goes_to_temporal() -> None:
    made = events(5)
    s = starter([message(e) for e in made])
    await s.run_until(lambda: len(s.receiver.acked) == 5, "5 acked")
    assert [c.event_id for c in s.starts.events] == [e.event_id for e in made]
    assert ids(s.receiver.acked) == [str(e.event_id) for e in made]
    started = s.starts.events[0].model_dump_json()
    entry = made[0].entry
    assert all(
        value not in started for value in (entry.key, entry.owner_tax_id, entry.owner_name, entry.account_number)
    )
    assert (s.stats.consumed, s.stats.started, s.stats.dead_lettered) == (5, 0, 0)  # FakeStarts counts none


async def test_an_event_marked_applied_is_acked_without_a_start() -> None:
    made = events(3)
    s = starter([message(e) for e in made], marks=FakeMarks({str(made[1].event_id)}))
    await s.run_until(lambda: len(s.receiver.acked) == 3, "3 acked")
    assert [c.event_id for c in s.starts.events] == [made[0].event_id, made[2].event_id]
    assert s.stats.already_marked == 1


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"not json", "invalid event"),
        (json.dumps({"schema": "cidsync.entry-event/v1"}).encode(), "invalid event"),
    ],
)
async def test_a_message_that_breaks_the_contract_is_dead_lettered_at_once_with_the_reason(
    payload: bytes, says: str
) -> None:
    good = events(1)[0]
    s = starter([FakeMessage(payload, "bad"), message(good)])
    await s.run_until(lambda: len(s.receiver.acked) == 2, "2 acked")
    assert [c.event_id for c in s.starts.events] == [good.event_id]
    [(content, properties)] = s.dead_letters.sent
    assert content == payload
    assert (properties["kind"], properties["original_topic"], properties["redelivery_count"]) == (
        INVALID_EVENT,
        TOPIC,
        "0",
    )
    assert properties["reason"].startswith(says)
    assert s.receiver.nacked == []


async def test_a_later_major_version_is_dead_lettered_whole_and_a_later_minor_is_started() -> None:
    """Core publishing ahead of the starter: v2 is never half-applied; v1.1's new fields are ignored."""
    major, minor = events(2)
    v2 = json.loads(major.to_json()) | {"schema": "cidsync.entry-event/v2"}
    v1_1 = json.loads(minor.to_json()) | {"schema": "cidsync.entry-event/v1.1", "origin": "core-2"}
    s = starter([FakeMessage(json.dumps(v2).encode(), "v2"), FakeMessage(json.dumps(v1_1).encode(), "v1.1")])
    await s.run_until(lambda: len(s.receiver.acked) == 2, "2 acked")
    assert [c.event_id for c in s.starts.events] == [minor.event_id]
    [(_, properties)] = s.dead_letters.sent
    assert "cidsync.entry-event/v2 is a major version this release does not read" in properties["reason"]


async def test_a_dead_letter_the_broker_did_not_take_is_redelivered_and_dead_lettered_then() -> None:
    """Left unsettled on a live consumer, a message never comes back (a chaos run lost four that way while
    the broker restarted): it is nacked after the backoff, and dead-lettered when it is received again."""
    good = events(1)[0]
    s = starter([FakeMessage(b"not json", "bad"), message(good)])
    s.dead_letters.fail_sends = 2
    await s.run_until(lambda: len(s.receiver.acked) == 2, "2 acked")
    assert [content for content, _ in s.dead_letters.sent] == [b"not json"]
    assert (ids(s.receiver.nacked), counts(s.receiver.nacked), s.stats.retried) == (["bad", "bad"], [0, 1], 2)


async def test_an_unforeseen_error_is_redelivered_and_in_the_end_dead_lettered_with_it() -> None:
    """Not a failure known to pass (a bug, a client error of an unexpected kind): still never left
    unsettled, and dead-lettered with the error once the redeliveries are spent."""
    made = events(1)
    s = starter([message(made[0])], starts=FakeStarts(fail=lambda _: KeyError("surprise")), max_redeliveries=1)
    await s.run_until(lambda: bool(s.dead_letters.sent), "a dead letter")
    [(_, properties)] = s.dead_letters.sent
    assert properties["reason"] == "gave up after 1 redeliveries: KeyError('surprise')"
    assert (counts(s.receiver.nacked), len(s.receiver.acked)) == ([0], 1)


async def test_a_transient_failure_is_redelivered_and_started_once_it_passes() -> None:
    made = events(2)
    failures = iter([TimeoutError("temporal slow"), RPCError("busy", RPCStatusCode.UNAVAILABLE, b"")])

    def fail(change: CIDChange) -> BaseException | None:
        return next(failures, None) if change.event_id == made[0].event_id else None

    s = starter([message(e) for e in made], starts=FakeStarts(fail=fail))
    await s.run_until(lambda: len(s.receiver.acked) == 2, "2 acked")
    assert counts(s.receiver.nacked) == [0, 1]  # nacked twice, each after its backoff
    assert sorted(str(c.event_id) for c in s.starts.events) == sorted(str(e.event_id) for e in made)
    assert (s.stats.retried, s.dead_letters.sent) == (2, [])


async def test_after_max_redeliveries_a_message_is_dead_lettered_with_the_last_error() -> None:
    made = events(1)
    s = starter([message(made[0])], starts=FakeStarts(fail=lambda _: TimeoutError("never")), max_redeliveries=2)
    await s.run_until(lambda: bool(s.dead_letters.sent), "a dead letter")
    [(_, properties)] = s.dead_letters.sent
    assert properties["kind"] == REDELIVERIES_EXHAUSTED
    assert properties["reason"] == "gave up after 2 redeliveries: TimeoutError('never')"
    assert (counts(s.receiver.nacked), len(s.receiver.acked)) == ([0, 1], 1)


async def test_a_message_is_dead_lettered_on_its_own_failures_not_on_its_batch_mates_redeliveries() -> None:
    """The broker counts redeliveries per producer batch: every nack of a batch-mate raises a message's
    count. A message that failed twice and then passes is started, whatever its broker count says."""
    made = events(1)
    failures = iter([TimeoutError("redis"), TimeoutError("redis")])
    s = starter([message(made[0])], starts=FakeStarts(fail=lambda _: next(failures, None)), max_redeliveries=3)
    s.receiver.inflation = 7  # six batch-mates failed alongside it each time
    await s.run_until(lambda: len(s.receiver.acked) == 1, "1 acked")
    assert [c.event_id for c in s.starts.events] == [made[0].event_id]
    assert (s.dead_letters.sent, counts(s.receiver.nacked)) == ([], [0, 7])


async def test_a_refusal_no_retry_can_fix_halts_the_loop_and_leaves_the_message_in_pulsar() -> None:
    refusal = RPCError("no such search attribute", RPCStatusCode.INVALID_ARGUMENT, b"")
    s = starter(
        [message(e) for e in events(1)],
        starts=FakeStarts(fail=lambda _: refusal),
        halt_after=timedelta(milliseconds=100),
        max_redeliveries=0,  # refusals are not the message's failures: it is never dead-lettered for them
    )
    with pytest.raises(StarterHalted, match="no such search attribute"):
        await s.run_until(lambda: False, "the halt")
    # Redelivered until the refusals had lasted 100 ms (never dead-lettered, though no redelivery is
    # allowed: the refusals are not the message's failures), then left in Pulsar.
    assert (s.receiver.acked, s.dead_letters.sent) == ([], [])
    assert len(s.receiver.nacked) >= 2


async def test_refusals_for_a_moment_as_from_a_temporal_just_restarted_only_delay_the_start() -> None:
    """ "Namespace default is not found" for a few seconds after a Temporal restart: the message is
    redelivered, not dead-lettered (no redelivery allowed here) and the starter does not halt."""
    refusal = RPCError("Namespace default is not found.", RPCStatusCode.NOT_FOUND, b"")
    refusals = iter([refusal, refusal, refusal])
    made = events(1)
    s = starter(
        [message(made[0])],
        starts=FakeStarts(fail=lambda _: next(refusals, None)),
        halt_after=timedelta(minutes=1),
        max_redeliveries=0,
    )
    await s.run_until(lambda: len(s.receiver.acked) == 1, "1 acked")
    assert [c.event_id for c in s.starts.events] == [made[0].event_id]
    assert (s.dead_letters.sent, len(s.receiver.nacked)) == ([], 3)
    assert s.loop.settler.halted is None


async def test_a_failed_receive_does_not_end_the_loop() -> None:
    made = events(2)
    s = starter([message(e) for e in made])
    s.receiver.fail_receives = 2
    await s.run_until(lambda: len(s.receiver.acked) == 2, "2 acked")
    assert len(s.starts.events) == 2


async def test_no_more_starts_under_way_than_slots_and_no_receive_while_all_are_taken() -> None:
    release = asyncio.Event()
    s = starter([message(e) for e in events(6)], starts=FakeStarts(release=release), max_in_flight=2)
    s.receiver.per_receive = 1
    stop = asyncio.Event()
    running = asyncio.ensure_future(s.loop.run(stop))
    await eventually_true(lambda: s.starts.under_way == 2, "two starts under way")
    await asyncio.sleep(0.05)  # time for a wrong loop to receive more
    # Two under way, a third received and waiting for a slot: the loop has stopped receiving.
    assert (s.starts.under_way, s.receiver.receives, s.receiver.acked) == (2, 3, [])
    release.set()
    await eventually_true(lambda: len(s.receiver.acked) == 6, "all six acked")
    stop.set()
    await running
    assert s.starts.most_under_way == 2


async def test_a_stop_lets_the_starts_under_way_finish_and_ack() -> None:
    release = asyncio.Event()
    s = starter([message(e) for e in events(3)], starts=FakeStarts(release=release))
    stop = asyncio.Event()
    running = asyncio.ensure_future(s.loop.run(stop))
    await eventually_true(lambda: s.starts.under_way == 3, "three starts under way")
    stop.set()
    await asyncio.sleep(0.05)  # time for a wrong loop to end without them
    assert not running.done()  # draining
    release.set()
    await running
    assert len(s.receiver.acked) == 3


async def test_batches_are_cut_by_size_and_the_last_by_its_own_timer() -> None:
    made = events(5)
    s = starter(
        [message(e) for e in made], mode=Mode.BATCH, batch_max_events=2, batch_max_wait=timedelta(milliseconds=50)
    )
    await s.run_until(lambda: len(s.receiver.acked) == 5, "5 acked")
    assert [[c.event_id for c in b] for b in s.starts.batches] == [
        [made[0].event_id, made[1].event_id],
        [made[2].event_id, made[3].event_id],
        [made[4].event_id],
    ]
    assert s.starts.events == []


async def test_a_batch_leaves_out_what_is_marked_and_acks_it_all() -> None:
    made = events(4)
    marks = FakeMarks({str(made[0].event_id), str(made[2].event_id)})
    s = starter([message(e) for e in made], marks=marks, mode=Mode.BATCH, batch_max_events=4)
    await s.run_until(lambda: len(s.receiver.acked) == 4, "4 acked")
    assert [[c.event_id for c in b] for b in s.starts.batches] == [[made[1].event_id, made[3].event_id]]
    assert s.stats.already_marked == 2


async def test_a_waiting_period_delete_gets_a_run_of_its_own_in_batch_mode() -> None:
    waiting = events(1, seed=9, deletion=DeletionType.WAITING_PERIOD)
    made = events(2)
    s = starter([message(e) for e in [made[0], *waiting, made[1]]], mode=Mode.BATCH, batch_max_events=2)
    await s.run_until(lambda: len(s.receiver.acked) == 3, "3 acked")
    assert [c.event_id for c in s.starts.events] == [waiting[0].event_id]
    assert [[c.event_id for c in b] for b in s.starts.batches] == [[made[0].event_id, made[1].event_id]]


@pytest.mark.parametrize("failure", [TimeoutError("redis slow"), ValueError("unforeseen")])
async def test_a_batch_that_fails_is_acked_by_none_and_redelivered_whole(failure: Exception) -> None:
    """A failure known to pass, or one nobody foresaw: never left unsettled either way."""
    made = events(3)
    failures = iter([failure])
    s = starter(
        [message(e) for e in made],
        starts=FakeStarts(fail=lambda _: next(failures, None)),
        mode=Mode.BATCH,
        batch_max_events=3,
    )
    await s.run_until(lambda: len(s.receiver.acked) == 3, "3 acked")
    assert sorted(ids(s.receiver.nacked)) == sorted(str(e.event_id) for e in made)
    assert sum(len(b) for b in s.starts.batches) == 3


async def test_a_stop_sends_the_batch_being_filled() -> None:
    made = events(2)
    s = starter([message(e) for e in made], mode=Mode.BATCH, batch_max_events=10, batch_max_wait=timedelta(hours=1))
    await s.run_until(lambda: s.stats.consumed == 2, "2 consumed")
    assert [[c.event_id for c in b] for b in s.starts.batches] == [[made[0].event_id, made[1].event_id]]
    assert len(s.receiver.acked) == 2
