"""Imports only go down (docs/development.md, issue 10): the roles depend on the shared package, never the reverse.

- `cidsync/` is what everyone shares; it imports no Temporal role, except the CLI, the composition root.
- `activities/` wraps side effects: it imports no workflow and no starter.
- `starters/` turns outside input into workflow starts: it imports no activity.
- `workflows/` imports activities (to name them) but no worker or starter.
"""

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROLES = ("activities", "workflows", "workers", "starters")
FORBIDDEN = {
    "cidsync": set(ROLES),
    "activities": {"workflows", "starters", "workers"},
    "starters": {"activities", "workers"},
    "workflows": {"workers", "starters"},
    "workers": {"starters"},
}


def top_level_imports(path: Path) -> set[str]:
    """Every package a module imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def modules(package: str) -> list[Path]:
    paths = sorted((ROOT / package).rglob("*.py"))
    if package == "cidsync":
        paths = [p for p in paths if "cli" not in p.relative_to(ROOT / package).parts]
    return paths


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_goes_up(package: str) -> None:
    found = modules(package)
    assert found, package
    wrong = {
        str(path.relative_to(ROOT)): sorted(top_level_imports(path) & FORBIDDEN[package])
        for path in found
        if top_level_imports(path) & FORBIDDEN[package]
    }
    assert wrong == {}


# The project stands on its own: no file sends its reader to a document a clone does not have.
OUTSIDE = re.compile(r"\.\./shared|(?<![/\w])(?:DESIGN|STACK|PERF|STYLE)\.md")


def test_no_file_points_outside_the_repository() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    pointing = []
    for name in tracked.split():
        path = ROOT / name
        if path.suffix in {".png", ".db"} or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        pointing += [f"{name}: {m.group()}" for m in OUTSIDE.finditer(text)]
    assert pointing == []
    assert {"design.md", "development.md", "stack.md"} <= {p.name for p in (ROOT / "docs").iterdir()}
