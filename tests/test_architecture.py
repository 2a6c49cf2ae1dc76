"""Imports only go down (docs/development.md, issue 10): the roles depend on the shared package, never the reverse.

- `cidsync/` is what everyone shares; it imports no Temporal role, except the CLI, the composition root.
- `activities/` wraps side effects: it imports no workflow and no starter.
- `starters/` turns outside input into workflow starts: it imports no activity.
- `workflows/` imports activities (to name them) but no worker or starter.

And the product (what a participant deploys: `cidsync`, `workflows`, `activities`, `workers`, `starters`)
imports no tooling (`cidsync_tooling`, the benches, the chaos run, the UI check, the tests) and no package
its runtime dependencies do not declare; only the CLI's composition root wires the tooling's commands in,
lazily, inside one function.
"""

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

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


PRODUCT = ("cidsync", *ROLES)
TOOLING = {"cidsync_tooling", "bench", "chaos", "uicheck", "tests"}
# The one place the product may name the tooling: the CLI's lazy registration of the developer's commands.
LAZY_TOOLING = ("cidsync/cli/__init__.py", "_register_tooling")


def tooling_imports(path: Path) -> list[str]:
    """Where a module imports tooling: the line, and the function it is in (None: at module level)."""
    found = []
    tree = ast.parse(path.read_text(), str(path))
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif node.module and node.level == 0:
            names = [node.module]
        if any(name.split(".")[0] in TOOLING for name in names):
            inside = next((f.name for f in functions if f.lineno <= node.lineno <= (f.end_lineno or 0)), None)
            relative = str(path.relative_to(ROOT))
            if (relative, inside) != LAZY_TOOLING:
                found.append(f"{relative}:{node.lineno} ({inside or 'module level'})")
    return found


def product_modules() -> list[Path]:
    return [path for package in PRODUCT for path in sorted((ROOT / package).rglob("*.py"))]


def test_the_product_imports_no_tooling() -> None:
    assert [where for path in product_modules() for where in tooling_imports(path)] == []


def test_the_product_imports_only_its_runtime_dependencies() -> None:
    """`pip install cidsync` without extras is enough to run every role: each third-party package the
    product imports comes from a distribution `pyproject.toml` lists under `dependencies`."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {Requirement(line).name.lower().replace("_", "-") for line in project["dependencies"]}
    providers = packages_distributions()
    ours = {"cidsync", "cidsync_tooling", *ROLES}  # one distribution (the tooling by the test above)
    declared.add("pydantic-core")  # pydantic's own core, pinned by it: its ErrorDetails type is pydantic's
    undeclared = {}
    for path in product_modules():
        for name in top_level_imports(path) - ours - set(sys.stdlib_module_names) - {"__future__"}:
            distributions = {d.lower().replace("_", "-") for d in providers.get(name, [])}
            if not distributions & declared:
                undeclared[f"{path.relative_to(ROOT)}: {name}"] = sorted(distributions)
    assert undeclared == {}


# The project stands on its own: no file sends its reader to a document a clone does not have, or to a
# path of the machine it was written on.
OUTSIDE = re.compile(r"\.\./shared|(?<![/\w])(?:DESIGN|STACK|PERF|STYLE)\.md|(?<![\w.])/wor[k]/")


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


def test_workflow_type_names_do_not_change_with_class_names() -> None:
    """Running workflows, schedules, saved queries and recorded histories name workflows by type: renaming
    a class must not rename its type (FollowCIDEvents keeps the type FollowCidEvents)."""
    from temporalio.workflow import _Definition

    from workers.cid_worker import INGESTION_WORKFLOWS, RECONCILIATION_WORKFLOWS

    names = {_Definition.must_from_class(w).name for w in INGESTION_WORKFLOWS + RECONCILIATION_WORKFLOWS}
    assert names == {
        "CreateCID",
        "UpdateCID",
        "DeleteCID",
        "ApplyCIDBatch",
        "ReconcileVSync",
        "VerifyAllPairs",
        "CheckVerificationFreshness",
        "FollowCidEvents",
    }
