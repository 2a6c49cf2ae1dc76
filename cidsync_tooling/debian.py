"""Tools PyPI lacks, from Debian's packages, unpacked into the venv without root.

`apt-get download` fetches a package's .deb into `.venv/debian/debs/` and `dpkg -x` unpacks it into
`.venv/debian/root/`, a tree of our own: nothing is installed on the machine, so it needs no root, and
`make clean` removes it with the venv. `make install` fetches Prometheus this way (`promtool` tests the
alert rules and the dashboard's queries, `prometheus` scrapes a dev stack in the alerting e2e test);
`make ui-check` fetches Chromium with the libraries the machine lacks (uicheck/chromium.py).

A tool already on PATH is used as it is. `python -m cidsync_tooling.debian promtool prometheus` fetches the
named tools and prints where each is.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(sys.prefix) / "debian"
APT_TIMEOUT_S = 900

# tool -> the Debian package that holds it (Prometheus's binaries are static: the package alone is enough)
PACKAGES = {"promtool": "prometheus", "prometheus": "prometheus"}


class DebianMissing(RuntimeError):
    """A package could not be fetched or unpacked; the message says what failed and what to run instead."""


def apt(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT_S, env=env, check=False)


def missing_packages(package: str) -> list[str]:
    """The packages apt would install for `package` on this machine (it and each dependency it lacks),
    from a simulated install, which needs no root."""
    simulated = apt(["apt-get", "install", "--simulate", "--no-install-recommends", package])
    if simulated.returncode != 0:
        raise DebianMissing(f"apt-get cannot plan {package}: {simulated.stderr.strip()[-300:]}")
    return re.findall(r"^Inst (\S+)", simulated.stdout, re.MULTILINE)


def unpack(packages: list[str], root: Path = ROOT) -> Path:
    """`apt-get download` each package (none already fetched) and `dpkg -x` it: returns the unpacked tree."""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise DebianMissing(f"no apt-get or dpkg here to fetch Debian's {', '.join(packages)}")
    downloads = root / "debs"
    downloads.mkdir(parents=True, exist_ok=True)
    wanted = [p for p in packages if not any(downloads.glob(f"{p}_*.deb"))]
    if wanted:
        fetched = apt(["apt-get", "download", *wanted], cwd=downloads)
        if fetched.returncode != 0:  # a new machine may have no package lists yet: as root, read them first
            if os.geteuid() == 0:
                apt(["apt-get", "update"])
                fetched = apt(["apt-get", "download", *wanted], cwd=downloads)
            if fetched.returncode != 0:
                raise DebianMissing(f"apt-get download {' '.join(wanted)} failed: {fetched.stderr.strip()[-300:]}")
    tree = root / "root"
    for deb in sorted(downloads.glob("*.deb")):
        if deb.name.split("_", 1)[0] in packages:
            subprocess.run(["dpkg", "-x", str(deb), str(tree)], check=True, timeout=APT_TIMEOUT_S)
    return tree


def unpacked_tool(name: str, root: Path = ROOT) -> Path | None:
    found = root / "root" / "usr" / "bin" / name
    return found if found.is_file() and os.access(found, os.X_OK) else None


def tool(name: str, root: Path = ROOT) -> Path:
    """`name` on PATH, or unpacked earlier, or fetched now from its Debian package."""
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    found = unpacked_tool(name, root)
    if found is not None:
        return found
    package = PACKAGES.get(name)
    if package is None:
        raise DebianMissing(f"no {name} on PATH, and no Debian package is known for it")
    unpack([package], root)
    found = unpacked_tool(name, root)
    if found is None:
        raise DebianMissing(f"Debian's {package} holds no usr/bin/{name}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cidsync_tooling.debian", description=__doc__.split("\n")[0])
    parser.add_argument("tools", nargs="+", choices=sorted(PACKAGES))
    args = parser.parse_args(argv)
    try:
        for name in args.tools:
            print(f"{name}: {tool(name)}")
    except (DebianMissing, subprocess.SubprocessError, OSError) as error:
        print(
            f"cidsync: {error}. Install Debian's prometheus package (or Prometheus 2.42 or newer) so that "
            f"{' and '.join(args.tools)} are on PATH, then run make install again",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
