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


@pytest.mark.timeout(900)  # about 70 s here; a stuck run is reported by the run itself first
@pytest.mark.parametrize(("replicas", "bridge"), [(1, "direct"), (2, "serve")])
def test_reduced_chaos_loses_nothing_doubles_nothing_and_leaks_nothing(
    tmp_path: Path, replicas: int, bridge: str
) -> None:
    """With one worker and one starter calling the simulator's gRPC face, and with two of each (the
    starters on a Shared subscription: chaos/stack.py says why) reaching DICT through `bridge serve`, which
    is killed too; one process killed at a time. (`make chaos` runs the full run through bridge serve.
    Under make test's load the one-worker run through the chain took 86-221 s against about 90 direct.)"""
    seed = random.SystemRandom().randrange(10**6)
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
    report = run.stdout[-6000:]
    assert run.returncode == 0, f"chaos --seed {seed} --replicas {replicas} failed:\n{report}\n{run.stderr[-3000:]}"
    assert "chaos PASSED" in run.stdout, report
    assert "14 of 14" in run.stdout, report  # every invalid message dead-lettered
    assert "every open run is on it" in run.stdout, report  # the workers were upgraded under load
    killed = next(line for line in run.stdout.splitlines() if "processes SIGKILLed" in line)
    for role in ("worker", "starter", "pulsar", "redis", "temporal", *(["bridge"] if bridge == "serve" else [])):
        assert f"'{role}" in killed, report  # the role's process, or one of its replicas (`'worker-2'`)
