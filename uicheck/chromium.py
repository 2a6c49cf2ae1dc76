"""Debian's Chromium for `make ui-check`: found, installed as root, or unpacked into the venv without root.

Playwright's own browser download cannot work here (no network but the package registries), and it is not
needed: Playwright drives any Chromium over the DevTools protocol. So the check uses Debian's `chromium`
package, in this order:
1. `CIDSYNC_CHROMIUM` (a path to a chromium binary), or `chromium` on PATH (`/usr/bin/chromium`);
2. one unpacked earlier into `.venv/debian/` by step 4;
3. as root: `apt-get install --no-install-recommends chromium` (after `apt-get update` when the package
   lists are empty, as on a new machine);
4. without root: `apt-get download` of chromium and of each dependency the machine lacks, `dpkg -x` of
   each into `.venv/debian/root/` (cidsync_tooling/debian.py), run with that tree's libraries first on
   `LD_LIBRARY_PATH`.
When none works, `ChromiumMissing` says what was tried and what to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cidsync_tooling import debian

PACKAGE = "chromium"
VARIABLE = "CIDSYNC_CHROMIUM"
UNPACKED = debian.ROOT


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


def _install_as_root(say: list[str]) -> Chromium | None:
    install = ["apt-get", "install", "-y", "--no-install-recommends", PACKAGE]
    done = debian.apt(install)
    if done.returncode != 0:  # a new machine has no package lists yet
        updated = debian.apt(["apt-get", "update"])
        say.append(f"apt-get update: exit {updated.returncode}")
        done = debian.apt(install)
    say.append(f"apt-get install {PACKAGE}: exit {done.returncode} {done.stderr.strip()[-300:]}")
    found = shutil.which(PACKAGE)
    return Chromium(Path(found), how="installed with apt-get") if done.returncode == 0 and found else None


def unpack_without_root(root: Path = UNPACKED) -> Chromium:
    """`apt-get download` + `dpkg -x`: Chromium and the libraries it lacks here, in a tree of our own."""
    try:
        debian.unpack(debian.missing_packages(PACKAGE), root)
    except debian.DebianMissing as error:
        raise ChromiumMissing(str(error)) from error
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
