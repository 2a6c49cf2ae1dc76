"""The alert rules on a real Prometheus (Debian's, fetched by `make install`) scraping a real dev stack:
every metric name the rules and the Grafana dashboard use appears in the scrape of the worker, the starter
and `bridge serve`, and an alert fires when a pair is made to diverge and clears once the pair is repaired.

The divergence is a CID added to the local set with no event and unknown to DICT, as a change core made
that DICT never saw would be: the follower finds the VSyncs differing with nothing in DICT's log to
explain it (`CidsyncFollowerUnexplainedMismatch`), hands the pair to ReconcileVSync, which removes the CID,
and the follower then finds the pair in sync again. The rules are the shipped file with every `for:`
shortened to 2 s: the expressions, the recording rules and the labels are what is tested here; the holding
times are in the promtool unit tests (test_prometheus_rules.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from cidsync.config import dev_stack_endpoints, load_settings
from cidsync.entry import KeyType, PairRef
from cidsync.redis_client import redis_client
from cidsync.store.cid_store import CIDStore
from cidsync.store.layout import PairKeys
from cidsync.temporal_client import connect
from cidsync_tooling.simulator.admin_client import SimulatorAdmin
from starters.followers import ensure_followers
from tests.deploy.test_grafana_dashboard import dashboard_metric_names
from tests.deploy.test_prometheus_rules import RULES
from tests.helpers.cli_runner import cidsync
from tests.helpers.dev_stack import stack_file
from tests.helpers.eventually import eventually_value
from tests.helpers.prometheus import Prometheus, prometheus, with_short_holds

PARTICIPANT = "12345678"
KEY_TYPE = KeyType.EVP
ALERT = "CidsyncFollowerUnexplainedMismatch"
# A follower that looks often and hands a pair over soon: the scenario in seconds, not minutes.
FOLLOWER = {
    "grace": timedelta(seconds=2),
    "poll_interval": timedelta(seconds=1),
    "catch_up_interval": timedelta(seconds=1),
    "idle_interval": timedelta(seconds=2),
    "log_settle": timedelta(seconds=1),
    "unexplained_after": timedelta(seconds=15),
}


def rule_metric_names(rules: str) -> set[str]:
    """The scraped metric names the rules' expressions read (the recording rules' own `cidsync:` names and
    label values such as `cidsync-worker` excluded)."""
    exprs = " ".join(rule["expr"] for group in yaml.safe_load(rules)["groups"] for rule in group["rules"])
    return {*re.findall(r"\bcidsync_[a-z0-9_]+", exprs), "up"}


def firing(prom: Prometheus) -> list[dict[str, Any]]:
    return [a for a in prom.alerts() if a["labels"]["alertname"] == ALERT and a["state"] == "firing"]


async def diverge_and_follow(env: dict[str, str], task_queue: str) -> str:
    """A local CID DICT never had, then a follower of the pair; returns the CID."""
    endpoints = dev_stack_endpoints(env)
    store = CIDStore(redis_client(str(endpoints["redis_url"])), b"unused")
    cid = uuid.uuid4().hex * 2  # 64 hex digits, as a CID
    try:
        pair = PairKeys(PARTICIPANT, KEY_TYPE)
        await store.reconciliation.repair(pair, uuid.uuid4().hex * 2, "", cid)
    finally:
        await store.close()
    client = await connect(load_settings({}, dev_endpoints=endpoints), identity="alerting-e2e")
    await ensure_followers(client, [PairRef(participant=PARTICIPANT, key_type=KEY_TYPE)], task_queue, FOLLOWER)
    return cid


async def diverge_dict(env: dict[str, str]) -> None:
    async with SimulatorAdmin(str(dev_stack_endpoints(env)["simulator_address"])) as admin:
        await admin.diverge(PARTICIPANT, KEY_TYPE, add=1, seed=9)


async def local_cids(env: dict[str, str]) -> set[str]:
    store = CIDStore(redis_client(str(dev_stack_endpoints(env)["redis_url"])), b"unused")
    try:
        return await store.view.cids(PARTICIPANT, KEY_TYPE)
    finally:
        await store.close()


def test_a_real_prometheus_sees_every_rule_metric_and_an_alert_fires_on_divergence_and_clears_after_repair(
    tmp_path: Path,
) -> None:
    config = stack_file(tmp_path)
    spec = yaml.safe_load(config.read_text())
    spec["codec"] = {"enabled": False}
    spec["follow"] = {"enabled": False}  # the test starts its own follower, with short timings
    config.write_text(yaml.safe_dump(spec))
    env = {"CIDSYNC_STATE_DIR": str(tmp_path / "state")}
    assert cidsync("dev", "up", "--config", str(config)).returncode == 0
    try:
        published = cidsync("publish", "--generate", "20", "--participants", PARTICIPANT, "--seed", "8", env=env)
        assert published.returncode == 0, published.stderr
        status = json.loads(cidsync("dev", "status", "--json", "--config", str(config)).stdout)
        jobs = {
            f"cidsync-{role}": str(status[f"{role}_metrics"]).removeprefix("http://")
            for role in ("worker", "starter", "bridge")
        }
        rules = RULES.read_text()
        with prometheus(tmp_path / "prometheus", jobs, {"cidsync-rules.yml": with_short_holds(rules, "2s")}) as prom:
            eventually_value(prom.targets, lambda t: t == dict.fromkeys(jobs, "up"), "every role scraped", timeout=60)
            cid = asyncio.run(diverge_and_follow(env, "cidsync"))

            alerts = eventually_value(lambda: firing(prom), bool, f"{ALERT} firing", timeout=120)
            assert [(a["labels"]["participant"], a["labels"]["key_type"]) for a in alerts] == [
                (PARTICIPANT, KEY_TYPE.value)
            ]
            eventually_value(lambda: firing(prom), lambda found: not found, f"{ALERT} cleared", timeout=180)
            assert cid not in asyncio.run(local_cids(env))  # cleared by the repair, not by a blind spot
            # The counters come a scrape (and the SDK's metric buffer) after the repair that cleared the alert:
            # under load the alert once cleared before the REPAIRED count was scraped.
            eventually_value(
                lambda: prom.query(
                    f'cidsync_reconciliations_total{{participant="{PARTICIPANT}",key_type="{KEY_TYPE.value}"}}'
                ),
                lambda found: {r["metric"]["outcome"] for r in found} == {"REPAIRED"},
                "the reconciliation counted REPAIRED",
                timeout=30,
            )
            eventually_value(
                lambda: prom.query(f'cidsync_follower_hand_overs_total{{key_type="{KEY_TYPE.value}"}}'),
                lambda found: {r["metric"]["reason"] for r in found} == {"unexplained"},
                "the hand-over counted",
                timeout=30,
            )

            # A change DICT's log shows and core never sent: the follower repairs it after its grace.
            asyncio.run(diverge_dict(env))
            eventually_value(
                lambda: prom.query(f'cidsync_follower_repairs_total{{key_type="{KEY_TYPE.value}",kind="added"}}'),
                bool,
                "the follower's repair counted",
                timeout=90,
            )

            # Every name the rules and the dashboard read, in the real scrape (the per-pair gauges come at
            # the worker's next read of the store, every 30 s).
            wanted = rule_metric_names(rules) | dashboard_metric_names()
            missing = eventually_value(
                lambda: wanted - prom.metric_names(), lambda m: not m, "every rule's metric scraped", timeout=60
            )
            assert missing == set()
    finally:
        assert cidsync("dev", "down", "--config", str(config)).returncode == 0
