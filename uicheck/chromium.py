"""Debian's Chromium for `make ui-check`: found, installed as root, or unpacked into the venv without root.

Playwright's own browser download cannot work here (no network but the package registries), and it is not
needed: Playwright drives any Chromium over the DevTools protocol. So the check uses Debian's `chromium`
package, in this order:
1. `CIDSYNC_CHROMIUM` (a path to a chromium binary), or `chromium` on PATH (`/usr/bin/chromium`);
2. one unpacked earlier into `.venv/debian/` by step 4;
3. as root: `apt-get install --no-install-recommends chromium` (after `apt-get update` when the package
   lists are empty, as on a new machine);
4. without root: `apt-get download` of chromium and of each dependency the machine lacks, `dpkg -x` of
   each into `.venv/debian/root/`, run with that tree's libraries first on `LD_LIBRARY_PATH`.
When none works, `ChromiumMissing` says what was tried and what to run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "chromium"
VARIABLE = "CIDSYNC_CHROMIUM"
UNPACKED = Path(sys.prefix) / "debian"
APT_TIMEOUT_S = 900


class ChromiumMissing(RuntimeError):
    """No Chromium could be found or installed; the message says what was tried and what to run."""


@dataclass(frozen=True)
class Chromium:
    """A Chromium binary and the environment it runs in (an unpacked one needs its own libraries)."""

    path: Path
    env: dict[str, str] = field(default_factory=dict)
    how: str = "found"


def _unpacked(root: Path) -> Chromium | None:
    binary = root / "root" / "usr" / "lib" / "chromium" / "chromium"
    if not binary.is_file():
        return None
    # Every folder of the tree that holds a shared library (some sit in subfolders: pulseaudio/).
    libraries = sorted({str(found.parent) for found in (root / "root").rglob("*.so*") if found.is_file()})
    inherited = os.environ.get("LD_LIBRARY_PATH")
    path = ":".join([*libraries, *([inherited] if inherited else [])])
    return Chromium(binary, {"LD_LIBRARY_PATH": path}, how=f"unpacked in {root}")


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=APT_TIMEOUT_S, env=env, check=False)


def _install_as_root(say: list[str]) -> Chromium | None:
    install = ["apt-get", "install", "-y", "--no-install-recommends", PACKAGE]
    done = _run(install)
    if done.returncode != 0:  # a new machine has no package lists yet
        updated = _run(["apt-get", "update"])
        say.append(f"apt-get update: exit {updated.returncode}")
        done = _run(install)
    say.append(f"apt-get install {PACKAGE}: exit {done.returncode} {done.stderr.strip()[-300:]}")
    found = shutil.which(PACKAGE)
    return Chromium(Path(found), how="installed with apt-get") if done.returncode == 0 and found else None


def missing_packages(package: str = PACKAGE) -> list[str]:
    """The packages apt would install for `package` on this machine (it and each dependency it lacks),
    from a simulated install, which needs no root."""
    simulated = _run(["apt-get", "install", "--simulate", "--no-install-recommends", package])
    if simulated.returncode != 0:
        raise ChromiumMissing(f"apt-get cannot plan {package}: {simulated.stderr.strip()[-300:]}")
    return re.findall(r"^Inst (\S+)", simulated.stdout, re.MULTILINE)


def unpack_without_root(root: Path = UNPACKED) -> Chromium:
    """`apt-get download` + `dpkg -x`: Chromium and the libraries it lacks here, in a tree of our own."""
    packages = missing_packages()
    downloads = root / "debs"
    downloads.mkdir(parents=True, exist_ok=True)
    if packages:
        fetched = subprocess.run(
            ["apt-get", "download", *packages],
            cwd=downloads,
            capture_output=True,
            text=True,
            timeout=APT_TIMEOUT_S,
            check=False,
        )
        if fetched.returncode != 0:
            raise ChromiumMissing(f"apt-get download failed: {fetched.stderr.strip()[-300:]}")
    for deb in sorted(downloads.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(root / "root")], check=True, timeout=APT_TIMEOUT_S)
    found = _unpacked(root)
    if found is None:
        raise ChromiumMissing(f"the unpacked packages hold no chromium binary under {root / 'root'}")
    return found


def find_or_install() -> Chromium:
    given = os.environ.get(VARIABLE)
    if given:
        if not os.access(given, os.X_OK):
            raise ChromiumMissing(f"{VARIABLE}={given} is not an executable file")
        return Chromium(Path(given), how=f"from {VARIABLE}")
    on_path = shutil.which(PACKAGE)
    if on_path:
        return Chromium(Path(on_path))
    unpacked = _unpacked(UNPACKED)
    if unpacked is not None:
        return unpacked
    tried: list[str] = []
    if shutil.which("apt-get") is None:
        raise ChromiumMissing(
            f"no chromium on PATH and no apt-get to install Debian's: install a Chromium and set "
            f"{VARIABLE} to its binary"
        )
    if os.geteuid() == 0:
        installed = _install_as_root(tried)
        if installed is not None:
            return installed
    try:
        return unpack_without_root()
    except (ChromiumMissing, subprocess.SubprocessError, OSError) as error:
        tried.append(f"apt-get download + dpkg -x: {error}")
    raise ChromiumMissing(
        "no Chromium: " + "; ".join(tried) + f". Run `sudo apt-get install chromium` (Debian) or set {VARIABLE}"
    )
