"""`make ui-check`: a reconciliation's page in the Web UI, opened in a real browser, shows it decoded.

What an operator does, done by a program: a private dev stack from `temporal-dev.yaml` (the same codec
wiring as `make demo`, on free ports and in a temporary folder, so a running demo is left alone), three
entries only DICT holds, `cidsync reconcile --wait` (REPAIRED), then the run's page in headless Chromium
(Debian's package, see `chromium.py`) driven by Playwright over the DevTools protocol. It fails unless:
- every request the page makes to the codec server is answered 200, and no codec banner is shown;
- the run's input is shown decoded: the participant and the key type in clear;
- its result is shown decoded (the outcome), and so are the activities' summaries;
- none of the repaired entries' personal values is on the page (decoded is not the same as exposed).
It saves a screenshot of the page (`--screenshot`, default `.cidsync/ui-check.png`; the README's picture
is one of these).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import Page, Response, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeout

from cidsync.entry import Entry, KeyType
from cidsync_tooling.audit import Corpus, personal_values_by_kind
from cidsync_tooling.devstack.processes import temporal_binary
from cidsync_tooling.devstack.spec import StackSpec, load_spec
from cidsync_tooling.devstack.stack import StackState, down, up
from cidsync_tooling.synthetic import pair_random, synthetic_entry
from uicheck.chromium import Chromium, ChromiumMissing, find_or_install

ROOT = Path(__file__).resolve().parent.parent
PARTICIPANT, KEY_TYPE = "60701190", KeyType.EVP
DICT_ONLY = 3
BANNER = "Codec Server could not connect"
# Summaries ReconcileVSync gives its activities (workflows/reconcile_vsync.py), shown decoded in the history.
SUMMARIES = ("VerifySync of", "notify core: cid.reconciliation.completed")
# Chromium as the machine's probe runs it: without the background-networking flags it dials Google's hosts,
# which this machine's closed network refuses many at a time.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
]
PAGE_TIMEOUT_S = 60


@dataclass
class Seen:
    """What the page showed and what it asked of the codec server."""

    text: str = ""
    codec_replies: list[tuple[int, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def private_spec(root: Path, stack_file: Path) -> StackSpec:
    """`temporal-dev.yaml` on free ports in `root`: the Temporal and Web UI of a demo, the codec on, in memory."""
    spec = load_spec(stack_file)
    return spec.model_copy(
        update={
            "state_dir": root / "state",
            "temporal": spec.temporal.model_copy(update={"port": 0, "ui_port": 0, "db_filename": None}),
            "pulsar": spec.pulsar.model_copy(update={"port": 0, "data_dir": root / "pulsar"}),
            "redis": spec.redis.model_copy(update={"port": 0, "data_dir": root / "redis", "appendonly": False}),
            "simulator": spec.simulator.model_copy(
                update={"port": 0, "api_port": 0, "data_dir": None, "file_delay_seconds": 0.5}
            ),
            "bridge": spec.bridge.model_copy(update={"port": 0, "metrics_port": None}),
            "codec": spec.codec.model_copy(update={"enabled": True, "port": 0}),
            "worker": spec.worker.model_copy(update={"replicas": 1, "metrics_port": None}),
            "starter": spec.starter.model_copy(update={"enabled": False}),
            "follow": spec.follow.model_copy(update={"enabled": False}),
        }
    )


def cli(state_dir: Path, *args: str) -> str:
    """A `cidsync` command as an operator types it, against the private stack."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "cidsync"), *args],
        capture_output=True,
        text=True,
        env={**_environ(), "CIDSYNC_STATE_DIR": str(state_dir)},
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cidsync {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout


def reconcile(state: StackState, root: Path) -> tuple[str, str, list[Entry]]:
    """Entries only DICT holds, then a reconciliation that adds them: its workflow and run ids."""
    state_dir = Path(state.state_dir)
    rng = pair_random(PARTICIPANT, KEY_TYPE, 2712)
    entries = [synthetic_entry(rng, PARTICIPANT, KEY_TYPE) for _ in range(DICT_ONLY)]
    load = root / "dict-only.jsonl"
    load.write_text("".join(e.model_dump_json() + "\n" for e in entries))
    cli(state_dir, "bridge-sim", "admin", "load", "--file", str(load))
    outcome = json.loads(
        cli(
            state_dir, "reconcile", "--participant", PARTICIPANT, "--key-type", KEY_TYPE.value, "--grace", "1", "--wait"
        )
    )
    if (outcome["outcome"], outcome["added"]) != ("REPAIRED", DICT_ONLY):
        raise RuntimeError(f"the reconciliation did not repair the pair: {outcome}")
    described = subprocess.run(
        [
            str(temporal_binary()),
            "workflow",
            "describe",
            "--workflow-id",
            outcome["workflow_id"],
            "--address",
            str(state.endpoints()["temporal_address"]),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    run_id = json.loads(described.stdout)["workflowExecutionInfo"]["execution"]["runId"]
    return str(outcome["workflow_id"]), str(run_id), entries


async def look(chromium: Chromium, url: str, codec_url: str, screenshot: Path) -> Seen:
    """Open the page, wait until the decoded input shows (or the time runs out), read it, take its picture."""
    seen = Seen()

    def answered(response: Response) -> None:
        if response.url.startswith(codec_url) and response.request.method == "POST":
            seen.codec_replies.append((response.status, response.url.removeprefix(codec_url)))

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium.path), args=CHROMIUM_FLAGS, env={**_environ(), **chromium.env}
        )
        try:
            page = await browser.new_page(viewport={"width": 1680, "height": 1300})
            page.on("response", answered)
            await page.goto(url, wait_until="load", timeout=PAGE_TIMEOUT_S * 1000)
            decoded = f'"participant": "{PARTICIPANT}"'
            try:
                await page.wait_for_function(
                    "(wanted) => document.body.innerText.includes(wanted)", arg=decoded, timeout=PAGE_TIMEOUT_S * 1000
                )
            except PlaywrightTimeout:  # a finding, reported with the rest of the page
                seen.failures.append(f"the decoded input never showed within {PAGE_TIMEOUT_S} s")
            await _summaries_shown(page, seen)
            seen.text = await page.inner_text("body")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(screenshot), full_page=False)
        finally:
            await browser.close()
    return seen


async def _summaries_shown(page: Page, seen: Seen) -> None:
    """The history table renders its rows after the input: wait for each summary a moment."""
    deadline = time.monotonic() + 20
    for summary in SUMMARIES:
        while summary not in await page.inner_text("body"):
            if time.monotonic() > deadline:
                seen.failures.append(f"no activity summary {summary!r} on the page")
                break
            await asyncio.sleep(0.5)


def _environ() -> dict[str, str]:
    """This process's environment without settings that would point a command away from the private stack."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("CIDSYNC_", "TEMPORAL_"))}


def verdict(seen: Seen, entries: list[Entry]) -> list[str]:
    failures = list(seen.failures)
    if not seen.codec_replies:
        failures.append("the page asked the codec server nothing")
    refused = [f"{status} {path}" for status, path in seen.codec_replies if status != 200]
    if refused:
        failures.append(f"the codec server refused {len(refused)} of {len(seen.codec_replies)}: {refused[:3]}")
    if BANNER in seen.text:
        failures.append(f"the page shows the banner {BANNER!r}")
    for wanted in (f'"participant": "{PARTICIPANT}"', f'"key_type": "{KEY_TYPE.value}"', '"outcome": "REPAIRED"'):
        if wanted not in seen.text:
            failures.append(f"the page does not show {wanted} decoded")
    corpus = Corpus()
    corpus.add("page", seen.text)
    # Keys, tax ids and names: an account number (4 to 12 digits) cannot be told from other numbers by value.
    leaked = corpus.leaked(set().union(*personal_values_by_kind(entries).values()))
    if leaked:
        failures.append(f"{len(leaked)} personal values of the repaired entries are on the page")
    return failures


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make ui-check", description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--screenshot", type=Path, default=ROOT / ".cidsync" / "ui-check.png")
    parser.add_argument("--stack-file", type=Path, default=ROOT / "temporal-dev.yaml")
    args = parser.parse_args(argv)
    try:
        chromium = await asyncio.to_thread(find_or_install)
    except ChromiumMissing as error:
        print(f"ui-check: {error}", file=sys.stderr)
        return 1
    print(f"ui-check: Chromium {chromium.path} ({chromium.how})", flush=True)
    with tempfile.TemporaryDirectory(prefix="cidsync-ui-check-") as folder:
        root = Path(folder)
        spec = private_spec(root, args.stack_file)
        try:
            state = await asyncio.to_thread(up, spec, args.stack_file)
            workflow_id, run_id, entries = await asyncio.to_thread(reconcile, state, root)
            endpoints: dict[str, Any] = state.endpoints()
            namespace = endpoints["temporal_namespace"]
            url = f"{endpoints['temporal_ui']}/namespaces/{namespace}/workflows/{workflow_id}/{run_id}/history"
            print(f"ui-check: {workflow_id} REPAIRED; opening {url}", flush=True)
            seen = await look(chromium, url, str(endpoints["codec_url"]), args.screenshot)
        finally:
            await asyncio.to_thread(down, spec.state_dir)
    failures = verdict(seen, entries)
    answered = sum(status == 200 for status, _ in seen.codec_replies)
    print(
        f"ui-check: the page made {len(seen.codec_replies)} decode requests, {answered} answered 200; "
        f"screenshot {args.screenshot}"
    )
    for failure in failures:
        print(f"ui-check: FAILED: {failure}", file=sys.stderr)
    if not failures:
        print("ui-check: passed: no codec banner; input, result and summaries decoded; no personal value shown")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
