"""`cidsync bridge verify|cids|dict-check|serve`: operators' calls to any Bridge, a check of the DICT API
connection, and the production Bridge over DICT API v2 (the simulator's commands are tooling's)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from typing import Any

from cidsync.cli.options import (
    add_pair,
    add_settings_flags,
    participant_flag,
    run_async,
    settings_of,
    stop_on_signals,
)
from cidsync.entry import KeyType
from cidsync.errors import InvalidInput, Problem

FILE_WAIT_TIMEOUT = 900.0


def bridge_address(args: argparse.Namespace) -> str:
    return settings_of(args).require("bridge_address")


def _check_vsync(value: str) -> str:
    from cidsync.cid import is_cid

    if not is_cid(value):
        raise InvalidInput("request", [Problem("--vsync", "a VSync must be 64 lowercase hexadecimal digits")])
    return value


async def _verify(args: argparse.Namespace) -> int:
    from cidsync.bridge.client import BridgeClient, ClientTls

    participant, vsync = participant_flag(args.participant), _check_vsync(args.vsync)
    async with BridgeClient(bridge_address(args), tls=ClientTls.from_env()) as client:
        result = await client.verify_sync(participant, KeyType(args.key_type), vsync)
    print("OK" if result.ok else "NOK")
    return 0


async def _cids(args: argparse.Namespace) -> int:
    """Request a CID file, wait for it (honouring DICT's retry-after), stream it, check its SHA-256."""
    from cidsync.bridge.client import BridgeClient, ClientTls
    from cidsync.bridge.errors import RateLimited
    from cidsync.bridge.models import FileStatus

    participant = participant_flag(args.participant)
    async with BridgeClient(bridge_address(args), tls=ClientTls.from_env()) as client:
        file = await client.create_cid_set_file(participant, KeyType(args.key_type))
        print(f"CID file {file.file_id} requested", file=sys.stderr)
        deadline = asyncio.get_running_loop().time() + args.timeout
        while not file.status.final:
            if asyncio.get_running_loop().time() > deadline:
                print(
                    f"cidsync: the CID file is still {file.status.value} after {args.timeout:.0f} s",
                    file=sys.stderr,
                )
                return 1
            await asyncio.sleep(args.poll_interval)
            try:
                file = await client.get_cid_set_file(file.participant, file.file_id)
            except RateLimited as limited:
                await asyncio.sleep(limited.retry_after)
        if file.status is not FileStatus.AVAILABLE:
            print(f"cidsync: DICT could not produce the CID file: {file.status.value}", file=sys.stderr)
            return 1
        digest, count = hashlib.sha256(), 0
        out = sys.stdout
        async for page in client.cid_pages(file.participant, file.file_id):
            for value in page.cids:
                digest.update(value.encode() + b"\n")
                out.write(value + "\n")
            count += len(page.cids)
    out.flush()
    if (count, digest.hexdigest()) != (file.cid_count, file.sha256):
        print(f"cidsync: received {count} CIDs that do not match the file's count or SHA-256", file=sys.stderr)
        return 1
    print(f"{count} CIDs, SHA-256 {file.sha256} checked", file=sys.stderr)
    return 0


async def _dict_check(args: argparse.Namespace) -> int:
    """Reach DICT as `bridge serve` would and say what works: mutual TLS, the response signature, the
    buckets. It spends no token of any bucket (the policies are free to read)."""
    from cidsync.dict_api.client import DictApiClient, dict_api_config

    participant = participant_flag(args.participant)
    config = dict_api_config(settings_of(args))
    async with DictApiClient(config) as dict_:
        states = await dict_.policies(participant)
    print(f"DICT at {config.url}: mutual TLS established, response signature checked against {config.signer_cert}")
    for state in states:
        print(
            f"  {state.name:<26} {state.available_tokens:>6} of {state.capacity:<6} tokens, "
            f"{state.refill_tokens} every {state.refill_period_sec} s"
        )
    return 0


async def _serve(args: argparse.Namespace) -> int:
    """The Bridge contract over DICT API v2, until SIGTERM or SIGINT."""
    from cidsync.dict_api.serve import serve_bridge
    from cidsync.telemetry.endpoint import serving
    from cidsync.telemetry.logs import configure_logging

    configure_logging(args.log_level)
    settings = settings_of(args)
    stop = stop_on_signals()
    async with serving("cidsync-bridge", settings.metrics_bind) as observed:
        if observed.url is not None:
            print(f"bridge: metrics on {observed.url}/metrics, health on {observed.url}/readyz", file=sys.stderr)
        await serve_bridge(settings, stop, observed.health)
    return 0


def register(commands: Any) -> None:
    bridge = commands.add_parser(
        "bridge", help="talk to the Bridge (DICT) as an operator", description="Operator calls to the Bridge."
    )
    actions = bridge.add_subparsers(title="actions", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="send a VSync to DICT; prints OK or NOK")
    add_pair(verify)
    verify.add_argument("--vsync", required=True, metavar="HEX")
    add_settings_flags(verify, ["bridge_address"])
    verify.set_defaults(handler=run_async(_verify))
    cids = actions.add_parser("cids", help="request a CID file, wait for it, print its CIDs one per line")
    add_pair(cids)
    cids.add_argument("--poll-interval", type=float, default=1.0, metavar="SECONDS")
    cids.add_argument("--timeout", type=float, default=FILE_WAIT_TIMEOUT, metavar="SECONDS")
    add_settings_flags(cids, ["bridge_address"])
    cids.set_defaults(handler=run_async(_cids))
    check = actions.add_parser(
        "dict-check",
        help="reach DICT API v2 with the CIDSYNC_DICT_* settings: TLS, signatures, the rate-limit buckets",
        description="What `bridge serve` needs, checked against DICT: the certificates and key can be read "
        "and go together, DICT accepts our client certificate, DICT's response is signed by a certificate of "
        "the signer bundle. Prints the participant's rate-limit buckets; spends no token.",
    )
    check.add_argument("--participant", required=True, metavar="ISPB", help="the requesting participant")
    add_settings_flags(check, ["dict_url", "dict_client_cert", "dict_client_key", "dict_ca", "dict_signer_cert"])
    check.set_defaults(handler=run_async(_dict_check))
    serve = actions.add_parser(
        "serve",
        help="serve the Bridge contract over DICT API v2 (production)",
        description="The Bridge the workers call (CIDSYNC_BRIDGE_ADDRESS), speaking DICT API v2 with the "
        "CIDSYNC_DICT_* certificates: signed requests, checked responses, CID files downloaded and checked, "
        "file requests idempotent for 24 h through Redis (shared by replicas).",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_settings_flags(
        serve,
        [
            "dict_url",
            "dict_client_cert",
            "dict_client_key",
            "dict_ca",
            "dict_signer_cert",
            "redis_url",
            "bridge_host",
            "bridge_port",
            "bridge_spool_dir",
            "bridge_tls_server_cert",
            "bridge_tls_server_key",
            "bridge_tls_client_ca",
            "metrics_bind",
        ],
    )
    serve.set_defaults(handler=run_async(_serve))
