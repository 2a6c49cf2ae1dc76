"""FollowCidEvents on the time-skipping server: its cursor and paging, the grace period, repairs,
continue-as-new, DICT's rate limit and the hand-overs to ReconcileVSync, over simulated minutes and hours.

The poll is the real activity (`FollowActivities`) over a scripted world: DICT's log is the simulator's
own `EventLog` filled from a script of (offset, ADDED|REMOVED, CID), and the local set follows a script
of its own (when each CID's event arrives), read at the server's (skipped) clock. Once the server's clock
passes the script's horizon the poll blocks, which stops time skipping, and the test reads the
follower's status.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.follow import FollowActivities
from activities.proof import ProofActivities
from activities.repair import SuspectRepairInput, SuspectRepairResult
from cidsync.bridge import errors
from cidsync.bridge.models import CIDEventType, CIDSetEvent, CIDSetEvents, Verification
from cidsync.cid import vsync
from cidsync.entry import KeyType
from cidsync.store.layout import PairKeys, Scratch
from cidsync.store.models import LocalView, VerificationRecord
from cidsync_tooling.simulator.dict_state import EventLog
from tests.helpers.workers import current_worker
from tests.workflows.stand_ins import FakeReconcile
from workflows.follow_cid_events import FollowCIDEvents, FollowInput, FollowStatus
from workflows.reconcile_vsync import ReconcileInput

PARTICIPANT = "12345678"
ADDED, REMOVED = CIDEventType.ADDED, CIDEventType.REMOVED


def cid(n: int) -> str:
    return format(n * 0x9E3779B97F4A7C15 + 1, "064x")[-64:]


@dataclass
class World:
    """DICT's log and the local set over (skipped) time, from offsets after `t0`."""

    t0: datetime
    horizon: timedelta
    dict_events: list[tuple[timedelta, CIDEventType, str]] = field(default_factory=list)
    arrivals: dict[str, list[tuple[timedelta, bool]]] = field(default_factory=dict)  # local set, per CID
    local_at_start: set[str] = field(default_factory=set)
    refusals: list[float] = field(default_factory=list)  # retry-afters answered to the first polls
    polls: list[tuple[datetime, datetime]] = field(default_factory=list)  # (when, from)
    refused_at: list[datetime] = field(default_factory=list)
    repairs: list[tuple[datetime, str, bool]] = field(default_factory=list)
    proofs: list[VerificationRecord] = field(default_factory=list)
    outboxes: list[str] = field(default_factory=list)
    reconciliations: list[ReconcileInput] = field(default_factory=list)
    verifications: list[datetime] = field(default_factory=list)  # VerifySync calls of the follower's proofs
    reached: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.log = EventLog()
        for offset, kind, value in sorted(self.dict_events, key=lambda e: e[0]):
            self.log.append(self.t0 + offset, kind, value)
        self._repaired: dict[str, bool] = {}

    def now(self) -> datetime:
        return activity.info().current_attempt_scheduled_time

    def local(self, value: str, now: datetime) -> bool:
        if value in self._repaired:
            return self._repaired[value]
        present = value in self.local_at_start
        for offset, state in self.arrivals.get(value, []):
            if self.t0 + offset <= now:
                present = state
        return present

    def local_set(self, now: datetime) -> set[str]:
        known = self.local_at_start | set(self.arrivals) | set(self._repaired) | set(self.log.cids)
        return {value for value in known if self.local(value, now)}

    # --- the poll activity's Bridge and store ----------------------------------------------------------

    async def list_cid_set_events(
        self, participant: str, key_type: KeyType, start: datetime, end: datetime, limit: int = 200
    ) -> CIDSetEvents:
        now = self.now()
        if now >= self.t0 + self.horizon:
            self.reached.set()
            await asyncio.Event().wait()  # a poll in flight: the server stops skipping time
        if len(self.refused_at) < len(self.refusals):
            self.refused_at.append(now)
            raise errors.RateLimited(
                "ListCidSetEvents: rate limit of DICT reached", retry_after=self.refusals[len(self.refused_at) - 1]
            )
        if activity.info().activity_type == "poll_cid_events":  # not the proofs' reads of the last moments
            self.polls.append((now, start))
        page = self.log.page(start, end, limit)
        return CIDSetEvents(
            events=[CIDSetEvent(type=kind, cid=value, timestamp=at) for at, kind, value in page.events],
            has_more=page.has_more,
            verifier_start=page.verifier_start,
            verifier_end=page.verifier_end,
        )

    def dict_set(self, now: datetime) -> set[str]:
        current: set[str] = set()
        for _at, kind, value in self.log.page(self.t0 - timedelta(days=1), now, limit=len(self.log) or 1).events:
            (current.add if kind is CIDEventType.ADDED else current.discard)(value)
        return current

    async def verify_sync(self, participant: str, key_type: KeyType, value: str) -> Verification:
        now = self.now()
        self.verifications.append(now)
        return Verification(
            verification_id=f"v{len(self.verifications)}", ok=value == vsync(self.dict_set(now)), verified_at=now
        )

    async def get_entry_by_cid(self, participant: str, value: str) -> None:
        if value not in self.dict_set(self.now()):
            raise errors.NotFound(f"no entry with CID {value}")

    @property
    def view(self) -> "World":
        """The store's view of the pair (`CIDStore.view`), played by the world as well."""
        return self

    async def local_view(self, pair: PairKeys, cids: list[str], changes_since: datetime | None = None) -> LocalView:
        now = self.now()
        members = self.local_set(now)
        changes: list[tuple[str, bool]] = []
        if changes_since is not None:  # the store's journal: the set's real changes, in the order made
            moments = sorted(
                {
                    self.t0 + offset
                    for arrivals in self.arrivals.values()
                    for offset, _ in arrivals
                    if changes_since <= self.t0 + offset <= now
                }
            )
            before = self.local_set(changes_since - timedelta(microseconds=1))
            for moment in moments:
                after = self.local_set(moment)
                changes += [(c, False) for c in sorted(before - after)] + [(c, True) for c in sorted(after - before)]
                before = after
        return LocalView(
            members=[c in members for c in cids], vsync=vsync(members), count=len(members), changes=changes
        )

    # --- the other activities, and the reconciliation a hand-over starts --------------------------------

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="repair_suspects")
        async def repair_suspects(request: SuspectRepairInput) -> SuspectRepairResult:
            now = self.now()
            for suspect in request.suspects:
                self.repairs.append((now, suspect.cid, suspect.in_dict))
                self._repaired[suspect.cid] = suspect.in_dict
            return SuspectRepairResult(
                repaired=[s.cid for s in request.suspects], skipped=[], vanished=[], inconsistent=[]
            )

        @activity.defn(name="publish_outbox")
        async def publish_outbox(scratch: Scratch) -> int:
            self.outboxes.append(scratch.run_id)
            return 1

        @activity.defn(name="record_verification")
        async def record_verification(record: VerificationRecord) -> None:
            self.proofs.append(record)

        follow = FollowActivities(self, self, clock=self.now)  # type: ignore[arg-type]
        proofs = ProofActivities(self, self, clock=self.now)  # type: ignore[arg-type]
        return [
            follow.poll_cid_events,
            repair_suspects,
            publish_outbox,
            record_verification,
            proofs.prove_sync,
            proofs.confirm_landed,
        ]


async def t0_of(env: WorkflowEnvironment) -> datetime:
    """Where the scripts start: a few seconds before the run (each workflow's virtual clock starts at the
    real time of its start), so the first poll finds what the script puts in its first seconds."""
    return datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)


def follower(**changes: Any) -> FollowInput:
    # This world shows every event at once: the log is read up to now (no settle), so pages are exact.
    values: dict[str, Any] = {
        "poll_interval": timedelta(seconds=15),
        "idle_interval": timedelta(seconds=60),
        "log_settle": timedelta(0),
        **changes,
    }
    return FollowInput(participant=PARTICIPANT, key_type=KeyType.EVP, **values)


@asynccontextmanager
async def following(
    env: WorkflowEnvironment, world: World, argument: FollowInput
) -> AsyncIterator[WorkflowHandle[FollowCIDEvents, None]]:
    queue = f"follow-{uuid.uuid4()}"
    async with current_worker(
        env.client, task_queue=queue, workflows=[FollowCIDEvents, FakeReconcile], activities=world.activities()
    ):
        handle = await env.client.start_workflow(
            FollowCIDEvents.run,
            argument.model_copy(update={"start_at": world.t0}),
            id=f"follow-{uuid.uuid4()}",
            task_queue=queue,
        )
        try:
            yield handle
        finally:
            await handle.terminate("test over")


async def at_horizon(world: World, handle: WorkflowHandle[FollowCIDEvents, None]) -> FollowStatus:
    try:
        async with asyncio.timeout(60):
            await world.reached.wait()
    except TimeoutError:
        described = await handle.describe()
        failure = ""
        if described.status is not None and described.status.name == "FAILED":
            try:
                await handle.result()
            except Exception as error:  # reported as the assertion's message
                failure = f": {error}: {error.__cause__}"
        raise AssertionError(f"the horizon was never reached: {described.status}{failure}") from None
    return await handle.query(FollowCIDEvents.status)


def streaming(t0: datetime, horizon: timedelta, *, every: int, first: int, count: int, landing: timedelta) -> World:
    """Core adds a CID to DICT every `every` seconds (`cid(first)` on), each reaching the local set `landing`
    after DICT's change."""
    changes = [(timedelta(seconds=every * i + 1), ADDED, cid(first + i)) for i in range(count)]
    arrivals = {value: [(at + landing, True)] for at, _, value in changes}
    return World(t0, horizon, dict_events=changes, arrivals=arrivals)


async def test_pages_are_read_once_from_the_cursor_within_the_poll_interval(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    t0 = await t0_of(time_skipping_env)
    events = [(timedelta(seconds=1, milliseconds=i), ADDED, cid(i)) for i in range(450)]  # DICT: ms
    world = World(t0, timedelta(minutes=5), dict_events=events, local_at_start={cid(i) for i in range(450)})
    async with following(time_skipping_env, world, follower()) as handle:
        status = await at_horizon(world, handle)
    assert status.events == 450  # each event once: the boundary event each page repeats is dropped
    assert status.state == "in sync"
    assert status.dict_vsync == status.local_vsync == vsync(cid(i) for i in range(450))
    # Three pages (200, 200, 50), every one after the first starting at the previous page's last event,
    # inclusively: after a full page at the catch-up interval, after the last page with events at the poll
    # interval; then the quiet log, backing off to the idle interval.
    starts = list(dict.fromkeys(start for _, start in world.polls))
    assert starts == [t0, *(t0 + events[i][0] for i in (199, 398, 449))]  # a repeat fills a page too
    gaps = [(b - a).total_seconds() for (a, _), (b, _) in zip(world.polls, world.polls[1:], strict=False)]
    for gap, expected in zip(gaps, [3, 3, 15, 30, 60, 60], strict=False):
        assert expected <= gap < expected + 2  # the timer, plus a workflow task's moment
    assert len(world.proofs) == 1  # recorded once, then again only after `proof_every`
    assert world.proofs[0].ok
    assert (world.proofs[0].kind, world.proofs[0].verification_id) == ("formal", "v1")  # DICT's VerifySync id
    assert world.repairs == []


async def test_a_suspect_resolved_within_its_grace_is_dropped_and_the_others_are_repaired(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    t0 = await t0_of(time_skipping_env)
    late, lost, gone, altered_old, altered_new = cid(1), cid(2), cid(3), cid(4), cid(5)
    world = World(
        t0,
        timedelta(minutes=10),
        dict_events=[
            (timedelta(seconds=-60), ADDED, gone),  # before the follower's start: both sides hold these
            (timedelta(seconds=-60), ADDED, altered_old),
            (timedelta(seconds=10), ADDED, late),  # core's event arrives 90 s later: within the grace
            (timedelta(seconds=20), ADDED, lost),  # never arrives: DICT-only
            (timedelta(seconds=30), REMOVED, gone),  # local keeps it: local-only
            (timedelta(seconds=40), REMOVED, altered_old),  # an update behind core's back
            (timedelta(seconds=40, microseconds=1), ADDED, altered_new),
        ],
        arrivals={late: [(timedelta(seconds=100), True)]},
        local_at_start={gone, altered_old},
    )
    grace = timedelta(minutes=2)
    async with following(time_skipping_env, world, follower(grace=grace)) as handle:
        status = await at_horizon(world, handle)
    repaired = {value: (at - t0, in_dict) for at, value, in_dict in world.repairs}
    assert set(repaired) == {lost, gone, altered_old, altered_new}  # `late` resolved itself
    assert {value: in_dict for value, (_, in_dict) in repaired.items()} == {
        lost: True,
        altered_new: True,
        gone: False,
        altered_old: False,
    }
    changed = {lost: 20, gone: 30, altered_old: 40, altered_new: 40}
    for value, (after, _) in repaired.items():
        # Never before the grace is over, and at most one poll interval (plus the DICT timestamp's
        # microsecond) after it.
        assert grace + timedelta(seconds=changed[value]) <= after <= grace + timedelta(seconds=changed[value] + 16)
    assert (status.added, status.removed, status.resolved) == (2, 2, 1)
    assert status.suspects == {}
    assert status.state == "in sync"
    assert world.outboxes
    assert set(world.outboxes) == {"follow"}
    assert world.proofs  # in sync after the repairs: a proof


async def test_a_pair_that_always_has_suspects_is_proved_while_it_changes(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """Core changes the pair every 4 s and each change reaches the local set 3 s later, so a poll (every
    15 s) often finds one in flight: suspects are pending at most polls and never is the pair "in sync".
    The follower proves it all the same (activities/proof.py): DICT answers OK to the local VSync with the
    in-flight CIDs as its log has them, and once those landed, the proof is recorded as formal."""
    world = streaming(await t0_of(time_skipping_env), timedelta(minutes=9), every=4, first=300, count=150,
                      landing=timedelta(seconds=3))  # fmt: skip
    argument = follower(grace=timedelta(seconds=30), proof_every=timedelta(minutes=2))
    async with following(time_skipping_env, world, argument) as handle:
        status = await at_horizon(world, handle)
    assert world.repairs == []  # every suspect resolved itself: all were in flight
    formal = [p for p in world.proofs if p.kind == "formal"]
    assert len(formal) >= 2, world.proofs  # every `proof_every`, suspects or not
    assert all(p.ok and p.vsync for p in formal)
    assert status.withdrawn == 0
    assert status.last_proof_kind == "formal"
    assert world.verifications  # DICT was asked: these are VerifySync OKs, not the log's verifier alone


async def test_a_local_set_ahead_of_dicts_log_is_in_sync_and_never_handed_over(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """Core changes the pair every 3 s and each change reaches the local set half a second later, before
    DICT's log shows it (the log is read up to `log_settle`, 5 s, ago): every poll finds the local set
    ahead of the page, with no suspect to explain the difference. Seen as of the page's end (the store's
    journal undoes its newer changes), the local set equals DICT's verifier. Compared as it stood, it
    differed at every poll, and the pair went to ReconcileVSync every `unexplained_after` (what the chaos
    run did under load, with 1 s settles and fast starters)."""
    t0 = await t0_of(time_skipping_env)
    world = streaming(t0, timedelta(minutes=5), every=3, first=600, count=120, landing=timedelta(milliseconds=500))
    changes = world.dict_events
    argument = follower(log_settle=timedelta(seconds=5), unexplained_after=timedelta(minutes=1))
    async with following(time_skipping_env, world, argument) as handle:
        status = await at_horizon(world, handle)
    assert (status.hand_overs, status.last_hand_over) == (0, "")
    assert world.repairs == []
    assert status.state == "in sync"
    last = world.polls[-1][0]
    shown = {value for at, _, value in changes if t0 + at <= last - timedelta(seconds=5)}  # the last page
    assert status.local_vsync == status.dict_vsync == vsync(shown)
    assert status.local_count == len(shown) < len(world.local_set(last))  # the set was ahead of the page
    assert world.proofs  # in sync, so proved


async def test_continue_as_new_keeps_the_cursor_and_the_suspects(time_skipping_env: WorkflowEnvironment) -> None:
    t0 = await t0_of(time_skipping_env)
    events = [(timedelta(seconds=5 + i), ADDED, cid(100 + i)) for i in range(30)]
    world = World(t0, timedelta(minutes=8), dict_events=events, local_at_start={cid(100 + i) for i in range(1, 30)})
    argument = follower(polls_per_run=2, page_size=7)
    async with following(time_skipping_env, world, argument) as handle:
        status = await at_horizon(world, handle)
        description = await handle.describe()
    assert status.runs > 3
    assert description.run_id != handle.result_run_id  # the run now answering is a later one
    assert status.events == 30  # across the runs, each event exactly once
    assert [value for _, value, _ in world.repairs] == [cid(100)]  # suspected in one run, repaired in a later
    assert status.added == 1
    assert status.state == "in sync"


async def test_dict_rate_limit_refusals_are_waited_out(time_skipping_env: WorkflowEnvironment) -> None:
    t0 = await t0_of(time_skipping_env)
    world = World(
        t0,
        timedelta(minutes=5),
        dict_events=[(timedelta(seconds=1), ADDED, cid(7))],
        local_at_start={cid(7)},
        refusals=[45.0, 45.0],
    )
    async with following(time_skipping_env, world, follower()) as handle:
        status = await at_horizon(world, handle)
    first, second = world.refused_at
    assert second - first >= timedelta(seconds=45)  # DICT's retry-after, not our backoff
    assert world.polls[0][0] - second >= timedelta(seconds=45)
    assert status.events == 1
    assert status.state == "in sync"


async def test_too_many_suspects_and_an_unexplained_mismatch_go_to_reconcile_vsync(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    t0 = await t0_of(time_skipping_env)
    many = [(timedelta(seconds=1, microseconds=i), ADDED, cid(500 + i)) for i in range(12)]
    world = World(t0, timedelta(minutes=5), dict_events=many)
    async with following(time_skipping_env, world, follower(hand_over_above=10)) as handle:
        status = await at_horizon(world, handle)
        reconcile = time_skipping_env.client.get_workflow_handle(f"reconcile-{PARTICIPANT}-EVP")
        request = await reconcile.query(FakeReconcile.input)
    assert world.repairs == []  # not repaired blindly: above the threshold an operator may have to approve
    assert status.hand_overs >= 1
    assert "12 suspects due at once" in status.last_hand_over
    assert (request.trigger, request.participant) == ("follower", PARTICIPANT)

    # A local CID DICT never had (no event shows it): the VSyncs differ with no suspect.
    t0 = await t0_of(time_skipping_env)
    world = World(t0, timedelta(minutes=8), local_at_start={cid(900)})
    argument = follower(unexplained_after=timedelta(minutes=5))
    async with following(time_skipping_env, world, argument) as handle:
        status = await at_horizon(world, handle)
    assert status.hand_overs >= 1
    assert "no suspect to explain it" in status.last_hand_over
