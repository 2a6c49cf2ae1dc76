"""`cidsync dev ...` and `cidsync demo`: the embedded stack for developers.

Where the state lives, for every command: `$CIDSYNC_STATE_DIR` if set, else the `state_dir` of the
stack file (`--config`, or ./temporal-dev.yaml when it exists), else ./.cidsync.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cidsync import config
from cidsync_tooling.devstack.processes import StackError
from cidsync_tooling.devstack.spec import StackSpec, load_spec

if TYPE_CHECKING:
    from cidsync_tooling.devstack.stack import StackState

DEFAULT_STACK_FILE = Path("temporal-dev.yaml")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _stack_file(args: argparse.Namespace) -> Path | None:
    if args.config is not None:
        return Path(args.config).resolve()
    return DEFAULT_STACK_FILE.resolve() if DEFAULT_STACK_FILE.is_file() else None


def _spec(args: argparse.Namespace) -> tuple[StackSpec, Path]:
    path = _stack_file(args)
    if path is None:
        raise StackError(f"no stack file: there is no ./{DEFAULT_STACK_FILE} here; pass --config FILE")
    spec = load_spec(path)
    if os.environ.get(config.STATE_DIR_VARIABLE):
        spec = spec.model_copy(update={"state_dir": config.state_dir()})
    return spec, path


def _state_dir(args: argparse.Namespace) -> Path:
    if os.environ.get(config.STATE_DIR_VARIABLE) or _stack_file(args) is None:
        return config.state_dir()
    return _spec(args)[0].state_dir


def print_endpoints(state: StackState) -> None:
    e = state.endpoints()
    rows = [
        ("Temporal", f"{e['temporal_address']} (namespace {e['temporal_namespace']})"),
        ("Web UI", e["temporal_ui"] or "off (headless)"),
        ("Pulsar", f"{e['pulsar_url']} (namespace {e['pulsar_namespace']})"),
        ("Redis", e["redis_url"]),
    ]
    if e["bridge_address"] and e["bridge_address"] != e["simulator_address"]:
        rows.append(("Bridge", f"{e['bridge_address']} (cidsync bridge serve, to DICT API v2 {e['dict_url']})"))
    elif e["bridge_address"]:
        rows.append(("Bridge", f"{e['bridge_address']} (the simulator's gRPC face: bridge serve is off)"))
    if e["simulator_address"]:
        rows.append(("DICT", f"{e['simulator_address']} (the simulator: cidsync bridge-sim admin)"))
    if e["codec_url"]:
        rows.append(("Codec", f"{e['codec_url']} (payloads encrypted with {e['codec_keys_file']}; the UI decodes)"))
    for role in ("worker", "starter", "bridge"):
        if url := e[f"{role}_metrics"]:
            rows.append((role.capitalize(), f"{url}/metrics  {url}/healthz  {url}/readyz"))
    rows.append(("State", str(Path(state.state_dir) / "state.json")))
    for label, value in rows:
        print(f"{label:<9} {value}")


def _up(args: argparse.Namespace) -> int:
    from cidsync_tooling.devstack.stack import up

    spec, path = _spec(args)
    state = up(spec, path, on_start=lambda name: _progress(f"starting {name}..."))
    print_endpoints(state)
    from cidsync_tooling.devstack.followers import ensure_stack_followers

    followers = asyncio.run(ensure_stack_followers(spec, state))
    started = sum(1 for what in followers.values() if what == "started")
    print(
        f"{'Followers':<9} "
        + (
            f"{len(followers)} pairs ({started} started now): `cidsync follow status`"
            if followers
            else "none: no participants (follow.participants in the stack file, or CIDSYNC_PARTICIPANTS)"
        )
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from cidsync_tooling.devstack.stack import read_state

    state = read_state(_state_dir(args))
    running = state.running() if state else {}
    all_up = bool(running) and all(running.values())
    if args.json:
        endpoints: dict[str, Any] = state.endpoints() if state else {}
        services = {
            name: {"pid": svc.pid, "running": running[name], "log": svc.log, "ports": svc.ports}
            for name, svc in (state.services.items() if state else [])
        }
        print(json.dumps({"running": all_up, **endpoints, "services": services}, indent=2))
    elif state is None:
        print("the dev stack is not running (start it with `cidsync dev up`)", file=sys.stderr)
    else:
        print_endpoints(state)
        for name, alive in running.items():
            print(f"{name:<9} {'running' if alive else 'NOT RUNNING'} (pid {state.services[name].pid})")
    return 0 if all_up else 1


def _down(args: argparse.Namespace) -> int:
    from cidsync_tooling.devstack.stack import down

    stopped = down(_state_dir(args), on_stop=lambda name: _progress(f"stopping {name}..."))
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from cidsync_tooling.demo import DemoOptions, run_demo

    if args.events < 1:
        raise StackError("--events must be at least 1")
    spec, path = _spec(args)
    return run_demo(spec, path, DemoOptions(events=args.events, seed=args.seed))


def _with_config(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--config", metavar="FILE", help=f"the stack file (default: ./{DEFAULT_STACK_FILE} when present)"
    )
    return parser


def register(commands: Any) -> None:
    dev = commands.add_parser(
        "dev",
        help="run the embedded stack (Temporal, Pulsar, Redis) on this machine",
        description="The embedded stack declared in temporal-dev.yaml, as local processes.",
    )
    actions = dev.add_subparsers(title="actions", metavar="ACTION", required=True)
    up_ = _with_config(actions.add_parser("up", help="start what is not running and print the endpoints"))
    up_.set_defaults(handler=_up)
    status = _with_config(actions.add_parser("status", help="print the endpoints and what is running"))
    status.add_argument("--json", action="store_true", help="one JSON object with every endpoint")
    status.set_defaults(handler=_status)
    down_ = _with_config(actions.add_parser("down", help="stop exactly the processes `dev up` started"))
    down_.set_defaults(handler=_down)

    demo = _with_config(
        commands.add_parser(
            "demo",
            help="bring the stack up, run the demo on it, then stop what it started",
            description="The main job on the embedded stack: what `make demo` runs.",
        )
    )
    demo.add_argument("--events", type=int, default=2_000, metavar="N", help="how many entry events to publish")
    demo.add_argument(
        "--seed",
        type=int,
        help="the same seed, the same history (default: a new one each run; "
        "a kept stack's DICT refuses a history it already holds)",
    )
    demo.set_defaults(handler=_demo)
