"""The alert and recording rules (deploy/prometheus/cidsync-rules.yml), checked and unit-tested by promtool
from Debian's prometheus package (fetched by `make install`, cidsync_tooling/debian.py), and held to the
runbook: every alert has a test that sees it fire and a section of docs/runbook.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from cidsync_tooling.debian import tool

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "cidsync-rules.yml"
RULE_TESTS = PROMETHEUS / "tests" / "cidsync-rules.test.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"


def promtool(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool("promtool")), *argv], capture_output=True, text=True, timeout=120, check=False)


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_the_rules_are_valid_prometheus_rules() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.search(r"SUCCESS: \d+ rules found", checked.stdout), checked.stdout


def test_the_rules_unit_tests_pass() -> None:
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout, tested.stdout


def test_every_alert_is_seen_firing_in_a_unit_test() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert {rule["alert"] for rule in alerts()} - fired == set()


def test_every_alert_links_a_runbook_section_that_exists() -> None:
    # GitHub's anchors: the heading in lower case, spaces as dashes, other punctuation dropped.
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), re.MULTILINE)
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
    for rule in alerts():
        link = rule["annotations"]["runbook"]
        assert link == f"docs/runbook.md#{rule['alert'].lower()}", rule["alert"]
        assert link.split("#")[1] in anchors, f"{rule['alert']}: no section {link} in docs/runbook.md"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
