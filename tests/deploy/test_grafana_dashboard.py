"""The Grafana dashboard (deploy/grafana/cidsync.json): every query, its variables substituted, is a valid
PromQL expression for promtool, and reads only metrics cidsync exports or the rules record (the alerting e2e
test checks that each of those names is really scraped)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.test_prometheus_rules import RULES, promtool

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "cidsync.json"
# Grafana's variables, as Grafana substitutes them: the interval ones by a duration, a multi-value
# variable with "All" by its `allValue`.
SUBSTITUTES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$participant": ".*", "$key_type": ".*"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries() -> list[str]:
    """Every PromQL expression of the dashboard: the panels' targets and the annotations' (the template
    variables' `label_values(metric, label)` are Grafana's, not PromQL: their metric is checked instead)."""
    board = dashboard()
    found = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    found += [a["expr"] for a in board["annotations"]["list"] if "expr" in a]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            metric = re.fullmatch(r"label_values\((\w+), *\w+\)", variable["definition"])
            assert metric, variable["definition"]
            found.append(metric[1])
    return [substituted(q) for q in found]


def substituted(query: str) -> str:
    for variable, value in sorted(SUBSTITUTES.items(), key=lambda item: -len(item[0])):
        query = query.replace(variable, value)
    assert "$" not in query, f"a variable with no substitute: {query}"
    return query


def dashboard_metric_names() -> set[str]:
    """The scraped metric names the dashboard reads (not the `cidsync:` recorded ones)."""
    return {name for q in queries() for name in re.findall(r"\b(?:cidsync_[a-z0-9_]+|up|ALERTS)\b(?![:(])", q)}


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries())],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(queries())} rules found" in checked.stdout, checked.stdout


def test_the_dashboard_reads_only_what_cidsync_exports_or_records() -> None:
    recorded = {
        rule["record"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    used_recorded = {name for q in queries() for name in re.findall(r"\bcidsync:[a-z0-9_:]+", q)}
    assert used_recorded <= recorded, used_recorded - recorded
    exported = set(re.findall(r"`(cidsync_[a-z0-9_]+)", (ROOT / "README.md").read_text()))  # the metrics table
    histogram_parts = {f"{name}_bucket" for name in exported}
    unknown = dashboard_metric_names() - exported - histogram_parts - {"up", "ALERTS"}
    assert unknown == set(), f"not in the README's metrics table: {unknown}"


def test_the_dashboard_is_laid_out_on_grafanas_grid() -> None:
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]
