"""The dev stack's followers of DICT's CID event log, started by `cidsync dev up` and the demo."""

from __future__ import annotations

from collections.abc import Sequence

from cidsync.cli.options import follow_timing
from cidsync.config import load_settings
from cidsync.entry import KeyType, PairRef, check_participant
from cidsync_tooling.devstack.spec import StackSpec
from cidsync_tooling.devstack.stack import StackState


async def ensure_stack_followers(
    spec: StackSpec,
    state: StackState,
    participants: Sequence[str] | None = None,
    key_types: Sequence[KeyType] = tuple(KeyType),
    **timing: float,
) -> dict[str, str]:
    """The followers of a dev stack: for `participants`, else the stack file's, else CIDSYNC_PARTICIPANTS
    (none: nothing started), each of `key_types`. `timing` overrides the stack file's grace_seconds,
    poll_seconds, idle_seconds (the demo's short ones)."""
    from cidsync.temporal_client import connect
    from starters.followers import ensure_followers

    settings = load_settings({}, dev_endpoints=state.endpoints())
    chosen = list(participants) if participants is not None else spec.follow.participants or settings.participants
    if not chosen or not spec.follow.enabled or not spec.worker.enabled:
        return {}
    follow = spec.follow.model_copy(update=timing)
    pairs = [
        PairRef(participant=check_participant(p, field="follow.participants"), key_type=k)
        for p in chosen
        for k in key_types
    ]
    client = await connect(settings, identity="cidsync-dev")
    settings_of_followers = follow_timing(
        grace_seconds=follow.grace_seconds, poll_seconds=follow.poll_seconds, idle_seconds=follow.idle_seconds
    )
    return await ensure_followers(client, pairs, spec.worker.task_queue, settings_of_followers)
