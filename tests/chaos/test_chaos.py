"""The reduced chaos run (`python -m chaos.run --reduced`): 1,200 events through both starter modes while
every kind of fault is injected at least once, on a fresh embedded stack of its own. A new seed each
time, printed: a failure names the seed that replays it (`make chaos SEED=N` for the full run)."""

import random
import subprocess
import sys
from pathlib import Path

import pytest

from cidsync_tooling.devstack.stack import down

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)  # about 75-135 s here; a stuck run is reported by the run itself first
def test_reduced_chaos_loses_nothing_doubles_nothing_and_leaks_nothing(tmp_path: Path) -> None:
    """One run per `make test`, its shape drawn with its seed: one worker and one starter, or two of each
    (the starters on a Shared subscription: chaos/stack.py says why); DICT reached through the simulator's
    gRPC face, or through `bridge serve`, which is killed too. Each shape was a run of its own until the
    6-minute budget ran short: two runs were 40% of the suite's CPU on this two-core machine. The failure
    message names the seed and the shape that replay it; `make chaos` runs the full run through bridge
    serve."""
    draw = random.SystemRandom()
    seed, replicas, bridge = draw.randrange(10**6), draw.choice([1, 2]), draw.choice(["direct", "serve"])
    argv = ["--reduced", "--seed", str(seed), "--replicas", str(replicas), "--bridge", bridge]
    argv += ["--keep", str(tmp_path / "stack")]
    try:
        run = subprocess.run(
            [sys.executable, "-m", "chaos.run", *argv],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=840,
            check=False,
        )
    finally:
        down(tmp_path / "stack" / "state")  # a run killed by the timeout leaves its servers up
    (tmp_path / "chaos.out").write_text(run.stdout)  # beside the stack's logs, for a run that was slow
    report = run.stdout[-6000:]
    assert run.returncode == 0, f"chaos {' '.join(argv)} failed:\n{report}\n{run.stderr[-3000:]}"
    assert "chaos PASSED" in run.stdout, report
    assert "14 of 14" in run.stdout, report  # every invalid message dead-lettered
    assert "every open run is on it" in run.stdout, report  # the workers were upgraded under load
    killed = next(line for line in run.stdout.splitlines() if "processes SIGKILLed" in line)
    for role in ("worker", "starter", "pulsar", "redis", "temporal", *(["bridge"] if bridge == "serve" else [])):
        assert f"'{role}" in killed, report  # the role's process, or one of its replicas (`'worker-2'`)
