"""`cidsync demo` (what `make demo` runs), end to end on a stack of its own."""

from pathlib import Path

import psutil

from cidsync_tooling.devstack.stack import down
from tests.helpers.cli_runner import cidsync
from tests.helpers.dev_stack import stack_file


def test_demo_runs_end_to_end_and_stops_what_it_started(tmp_path: Path) -> None:
    config = stack_file(tmp_path)
    before = {p.pid for p in psutil.process_iter()}
    try:
        _demo_runs_end_to_end_and_stops_what_it_started(config, tmp_path, before)
    finally:
        down(tmp_path / "state")  # a demo killed by its timeout leaves its servers up (checked before this)


def _demo_runs_end_to_end_and_stops_what_it_started(config: Path, tmp_path: Path, before: set[int]) -> None:
    # 60 events: 30 for each participant, created in turn across the five key types, give every pair
    # entries; `make demo` runs its default 2,000. 200 here cost 39 CPU-s, 60 cost 29.
    result = cidsync("demo", "--config", str(config), "--events", "60", timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    table = [line.split() for line in lines if line.strip().endswith((" OK", " NOK"))]
    verdicts = [row[-1] for row in table if len(row) == 5]  # participant, key type, count, vsync, DICT
    assert verdicts == ["OK"] * 10  # two participants x five key types, all agreeing with DICT
    # Then DICT diverges for one participant: every key type goes from NOK to OK through a repair.
    reconciled = [(row[1], row[2], row[-1]) for row in table if len(row) == 7]
    assert reconciled == [("NOK", "REPAIRED", "OK")] * 5
    assert any(line.startswith("   core-events received: 5 cid.reconciliation.completed") for line in lines), (
        result.stdout
    )
    # Then DICT diverges again, for the other participant, and the followers of its event log repair it:
    # key type, found after, repaired after, added, removed (an altered entry is one added), DICT.
    followed = [row for row in table if len(row) == 8]
    assert len(followed) == 2
    assert all(row[2] == row[4] == "s" and row[5:] == ["3", "1", "OK"] for row in followed), followed
    assert "   CID files requested: 0 (the event log and GetEntryByCid were enough)" in " ".join(lines)
    assert any("3 messages (the 3 malformed ones)" in line for line in lines)
    assert sum(1 for line in lines if line.startswith("   - invalid event: ")) == 3
    assert any(line.startswith("== Temporal Web UI: http://127.0.0.1:") for line in lines)
    assert "== every VSync applied and confirmed by DICT, every divergence repaired" in lines
    assert lines[-1] == "== stopping the stack the demo started"
    assert not (tmp_path / "state" / "state.json").exists()
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.pid not in before and str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]
    assert not leftovers
