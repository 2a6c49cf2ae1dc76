"""`free_port`: a port no client connection can take before its server binds it, and no other chooser on
the machine is given while it is held (under make test a worker found its metrics port taken and exited)."""

from __future__ import annotations

import subprocess
import sys

from cidsync_tooling.devstack.processes import FREE_PORTS, free_port


def test_a_port_is_outside_the_ephemeral_range_and_never_handed_out_twice_while_held() -> None:
    mine = [free_port() for _ in range(50)]
    # Other processes choosing at the same time (the test workers, each stack's `dev up`) share the register.
    others = subprocess.run(
        [sys.executable, "-c", "from cidsync_tooling.devstack.processes import free_port\n"
         "print(*(free_port() for _ in range(50)))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    ports = mine + [int(p) for p in others]
    assert len(set(ports)) == len(ports) == 100
    assert all(p in FREE_PORTS for p in ports)
    assert max(ports) < 32_768  # where Linux's ephemeral range starts by default (macOS's: 49152)
