"""The simulator's DICT kept on disk (`journal.py`): a replay gives back exactly what was there."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

from cidsync.bridge.models import FileStatus
from cidsync.entry import KeyType
from cidsync.errors import InvalidInput
from cidsync_tooling.simulator.dict_state import SimulatedDict
from cidsync_tooling.simulator.journal import Journal
from cidsync_tooling.synthetic import pair_random, synthetic_entry

EVP = ("12345678", KeyType.EVP)
CPF = ("12345678", KeyType.CPF)


def journaled(path: Path) -> SimulatedDict:
    state = SimulatedDict()
    Journal(path).restore(state)
    return state


def snapshot(state: SimulatedDict) -> dict[str, object]:
    """Everything a caller of the Bridge can observe, and the event log's raw arrays."""
    pairs = {}
    for pair in (EVP, CPF):
        log = state._pair(pair).events
        pairs[pair] = (state.cids(pair), state.vsync(pair), list(log.at_ms), bytes(log.kinds), list(log.cids))
    files = {
        i: (f.participant, f.key_type, f.cids, f.status, f.sha256, f.requested_at, f.created_at)
        for i, f in state.files.items()
    }
    return {"pairs": pairs, "files": files, "requests": dict(state.file_requests), "count": state.entry_count()}


def make_changes(state: SimulatedDict) -> None:
    now = SimulatedDict.now()
    rng = pair_random(*CPF, seed=5)
    entries = [synthetic_entry(rng, *CPF) for _ in range(5)]
    for entry in entries:  # several in one millisecond: the log's ties must come back as they were
        state.register(entry, now)
    state.alter(entries[0].model_copy(update={"account_number": "123456"}), now + timedelta(seconds=1))
    state.remove(state.cids(CPF)[-1], now + timedelta(seconds=2))
    state.load_synthetic(EVP, 300, seed=9, now=now + timedelta(seconds=3))
    evp = state.new_file(*EVP, now + timedelta(seconds=4), request_id="recon-1")
    state.snapshot(evp, now + timedelta(seconds=4, milliseconds=500), FileStatus.AVAILABLE)  # taken after the request
    state.diverge(EVP, add=3, remove=2, alter=2, seed=11, now=now + timedelta(seconds=5))
    state.snapshot(state.new_file(*CPF, now + timedelta(seconds=6)), now + timedelta(seconds=6), FileStatus.ERROR)


def test_a_replay_gives_back_the_entries_vsyncs_event_log_and_files(tmp_path: Path) -> None:
    path = tmp_path / "dict.jsonl"
    first = journaled(path)
    make_changes(first)
    for file in first.files.values():  # as the running server seals them once made
        file.seal(FileStatus.AVAILABLE if file.key_type is KeyType.EVP else FileStatus.ERROR, SimulatedDict.now())

    again = journaled(path)

    assert snapshot(again) == snapshot(first)
    assert len(again._pair(EVP).events) == 300 + 3 + 2 + 2 * 2
    assert again.file_requests == {("12345678", "recon-1"): next(iter(first.files))}


def test_changes_after_a_replay_are_kept_too(tmp_path: Path) -> None:
    path = tmp_path / "dict.jsonl"
    make_changes(journaled(path))
    second = journaled(path)
    second.load_synthetic(CPF, 10, seed=1)
    assert snapshot(journaled(path)) == snapshot(second)


def test_a_line_cut_short_by_a_kill_is_dropped_and_the_journal_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "dict.jsonl"
    first = journaled(path)
    first.load_synthetic(EVP, 20, seed=1)
    whole = path.stat().st_size
    with path.open("a") as journal:
        journal.write('{"op":"remove","at":17000000000000')  # the kill came mid-line

    with caplog.at_level(logging.WARNING):
        second = journaled(path)
    assert "line 3 is incomplete" in caplog.text
    assert path.stat().st_size == whole
    assert snapshot(second) == snapshot(first)

    removed = second.cids(EVP)[0]
    assert second.remove(removed, SimulatedDict.now())
    assert removed not in journaled(path).cids(EVP)


def test_a_journal_of_another_format_or_with_unknown_changes_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.jsonl"
    other.write_text('{"op":"format","version":99}\n')
    with pytest.raises(InvalidInput, match="journal format 99"):
        journaled(other)
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"op":"format","version":1}\n{"op":"claim","at":1}\n')
    with pytest.raises(InvalidInput, match="unknown change 'claim'"):
        journaled(unknown)


def test_no_journal_file_is_an_empty_dict_and_clear_forgets_everything(tmp_path: Path) -> None:
    path = tmp_path / "state" / "dict.jsonl"
    state = journaled(path)
    assert state.entry_count() == 0
    assert not path.exists()
    state.load_synthetic(EVP, 5, seed=1)
    Journal(path).clear()
    assert journaled(path).entry_count() == 0
