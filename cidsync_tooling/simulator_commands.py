"""`cidsync bridge-sim`: run the DICT simulator (a real gRPC server), or drive a running one with `admin`."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from cidsync.cli.options import add_pair, participant_flag, run_async, stop_on_signals
from cidsync.entry import KeyType, parse_entry_json, parse_jsonl_entries
from cidsync.errors import InvalidInput, Problem

JOURNAL_NAME = "dict.jsonl"


async def _run_simulator(args: argparse.Namespace) -> int:
    from cidsync_tooling.simulator.journal import Journal
    from cidsync_tooling.simulator.server import ServerTls, Simulator, load_seed, start_server

    if bool(args.tls_cert) != bool(args.tls_key):
        raise InvalidInput("options", [Problem("--tls-cert/--tls-key", "give both, or neither")])
    participants = frozenset(p for p in (args.participants or "").split(",") if p)
    journal = Journal(Path(args.data_dir) / JOURNAL_NAME) if args.data_dir else None
    sim = Simulator(
        file_delay=args.file_delay,
        file_delay_per_cid=args.file_delay_per_cid_ms / 1000,
        event_delay=args.event_delay,
        event_jitter=args.event_jitter,
        time_scale=args.time_scale,
        rate_limits=not args.no_rate_limits,
        participants=participants,
        journal=journal,
    )
    if journal is not None:
        print(
            f"DICT kept in {journal.path}: {sim.restored} changes replayed, {sim.dict.entry_count()} entries",
            flush=True,
        )
    if args.seed_file and sim.restored:
        print(f"{args.seed_file} not loaded: DICT was restored from its journal", flush=True)
    elif args.seed_file:
        loaded = load_seed(sim, Path(args.seed_file))
        print(f"loaded {loaded} entries from {args.seed_file}", flush=True)
    tls = None
    if args.tls_cert:
        client_ca = Path(args.tls_client_ca) if args.tls_client_ca else None
        tls = ServerTls.from_files(Path(args.tls_cert), Path(args.tls_key), client_ca)
    server, port = await start_server(sim, args.host, args.port, tls)
    print(f"DICT simulator listening on {args.host}:{port}", flush=True)
    dict_api = await _start_dict_api(sim, args) if args.dict_api_port is not None else None
    await stop_on_signals().wait()
    if dict_api is not None:
        dict_api.close()
    await server.stop(grace=5)
    if journal is not None:
        journal.close()
    return 0


DICT_API_FILES = {
    "--dict-api-tls-cert": "dict_api_tls_cert",
    "--dict-api-tls-key": "dict_api_tls_key",
    "--dict-api-client-ca": "dict_api_client_ca",
    "--dict-api-signer-cert": "dict_api_signer_cert",
    "--dict-api-signer-key": "dict_api_signer_key",
}


def _unreadable(files: dict[str, str | None], *, required: bool) -> list[Problem]:
    """A problem for each file flag that is missing (when `required`) or names no readable file."""
    return [
        Problem(flag, "is required with --dict-api-port" if not value else f"cannot read {value}")
        for flag, value in files.items()
        if (required and not value) or (value and not Path(value).is_file())
    ]


async def _start_dict_api(sim: Any, args: argparse.Namespace) -> asyncio.Server:
    """The DICT API v2 face on `--dict-api-port`, on the same state as the gRPC face."""
    from cidsync.dict_api.signature import SignerBundle, SigningIdentity
    from cidsync_tooling.simulator.dict_api_face import DictApiTls, start_dict_api

    problems = _unreadable({flag: getattr(args, name) for flag, name in DICT_API_FILES.items()}, required=True)
    problems += _unreadable({"--dict-api-client-signers": args.dict_api_client_signers}, required=False)
    if problems:
        raise InvalidInput("options", problems)
    signers = SignerBundle.from_file(Path(args.dict_api_client_signers)) if args.dict_api_client_signers else None
    if signers is None:
        print("request signatures are not checked (no --dict-api-client-signers)", flush=True)
    server, face = await start_dict_api(
        sim,
        SigningIdentity.from_files(Path(args.dict_api_signer_cert), Path(args.dict_api_signer_key)),
        DictApiTls(args.dict_api_tls_cert, args.dict_api_tls_key, args.dict_api_client_ca),
        client_signers=signers,
        host=args.host,
        port=args.dict_api_port,
    )
    print(f"DICT API v2 listening on {face.base_url}/api/v2/", flush=True)
    return server


async def _admin(args: argparse.Namespace) -> int:
    from cidsync.bridge.models import FileStatus
    from cidsync_tooling.simulator.admin_client import SimulatorAdmin, simulator_address

    async with SimulatorAdmin(simulator_address(args.simulator_address)) as admin:
        match args.admin_command:
            case "load" if args.synthetic:
                if not (args.participant and args.key_type) or args.synthetic < 0:
                    raise InvalidInput("options", [Problem("--synthetic", "N >= 0, with --participant and --key-type")])
                loaded, pair_vsync = await admin.load_synthetic(
                    participant_flag(args.participant), KeyType(args.key_type), args.synthetic, seed=args.seed
                )
                print(f"loaded {loaded} synthetic entries; the pair's VSync is now {pair_vsync}")
            case "load":
                if not args.file:
                    raise InvalidInput("options", [Problem("--file", "is required (or --synthetic N)")])
                text = await asyncio.to_thread(Path(args.file).read_text, encoding="utf-8")
                cids = await admin.load(parse_jsonl_entries(text.splitlines(), args.file))
                print(f"loaded {len(cids)} entries")
            case "remove":
                removed, missing = await admin.remove(args.cids)
                print(f"removed {removed}" + (f"; not found: {' '.join(missing)}" if missing else ""))
            case "alter":
                raw = await asyncio.to_thread(Path(args.entry).read_bytes)
                old, new = await admin.alter(parse_entry_json(raw))
                print(f"{old} -> {new}")
            case "diverge":
                reply = await admin.diverge(
                    participant_flag(args.participant),
                    KeyType(args.key_type),
                    add=args.add,
                    remove=args.remove,
                    alter=args.alter,
                    seed=args.seed,
                )
                print(f"added {len(reply.added)}, removed {len(reply.removed)}, altered {len(reply.altered_new)}")
            case "faults":
                fail_next = {}
                for item in args.fail_next or []:
                    method, _, count = item.partition("=")
                    if not count.isdigit():
                        raise InvalidInput("options", [Problem("--fail-next", "is METHOD=COUNT, e.g. VerifySync=2")])
                    fail_next[method] = int(count)
                await admin.set_faults(
                    unavailable_ratio=args.unavailable_ratio,
                    latency_ms=args.latency_ms,
                    fail_next=fail_next,
                    file_outcome=FileStatus(args.file_outcome),
                    page_delay_ms=args.page_delay_ms,
                )
                print("faults set")
            case "stats":
                stats = await admin.stats()
                if args.json:
                    print(json.dumps(stats, indent=2, sort_keys=True))
                else:
                    print(f"entries {stats['entries']}")
                    for method, count in sorted(stats["calls"].items()):
                        limited = stats["rate_limited"].get(method, 0)
                        injected = stats["injected_unavailable"].get(method, 0)
                        print(f"{method:<18} calls {count:>7}  rate-limited {limited:>5}  injected {injected:>5}")
            case "reset":
                await admin.reset()
                print("simulator reset")
    return 0


def register(commands: Any) -> None:
    sim = commands.add_parser(
        "bridge-sim",
        help="run the DICT simulator (a real gRPC server), or drive it with `admin`",
        description="The DICT simulator: the Bridge contract served from memory, with DICT's rate limits, "
        "asynchronous CID files, fault and divergence injection.",
        # No abbreviations: `admin load --file` must not read as an abbreviation of `--file-delay...`.
        allow_abbrev=False,
    )
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=50051)
    sim.add_argument(
        "--seed-file",
        metavar="JSONL",
        help="entries to register at start, one per line (not when --data-dir already holds a DICT)",
    )
    sim.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"keep DICT across restarts in DIR/{JOURNAL_NAME}, a journal of its changes (default: in memory only)",
    )
    sim.add_argument(
        "--file-delay",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long a CID file of an empty set takes to become AVAILABLE; its snapshot is taken halfway",
    )
    sim.add_argument(
        "--file-delay-per-cid-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="more time per CID of the set, after the snapshot (0.1: 100 s for a million)",
    )
    sim.add_argument(
        "--event-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="how long after a change its CID event becomes visible in ListCidSetEvents",
    )
    sim.add_argument(
        "--event-jitter",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="each event's delay varies by up to this much, so one may show after later ones",
    )
    sim.add_argument(
        "--time-scale", type=float, default=1.0, help="speed of the rate limits' clock (1440: a day a minute)"
    )
    sim.add_argument("--no-rate-limits", action="store_true")
    sim.add_argument("--participants", metavar="ISPB,...", help="only these may call (others: PERMISSION_DENIED)")
    sim.add_argument("--tls-cert", metavar="PEM")
    sim.add_argument("--tls-key", metavar="PEM")
    sim.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA")
    api = sim.add_argument_group("DICT API v2 (HTTPS, mutual TLS, signed XML), on the same state")
    api.add_argument("--dict-api-port", type=int, metavar="P", help="serve DICT API v2 on this port (0: a free one)")
    api.add_argument("--dict-api-tls-cert", metavar="PEM", help="the server certificate of the DICT API")
    api.add_argument("--dict-api-tls-key", metavar="PEM")
    api.add_argument("--dict-api-client-ca", metavar="PEM", help="clients' certificates must chain to this CA")
    api.add_argument("--dict-api-signer-cert", metavar="PEM", help="the simulator's signing certificate (RSA)")
    api.add_argument("--dict-api-signer-key", metavar="PEM")
    api.add_argument(
        "--dict-api-client-signers",
        metavar="PEM",
        help="participants' signing certificates: a write request must be signed by one of them",
    )
    sim.set_defaults(handler=run_async(_run_simulator))
    admin_commands = sim.add_subparsers(title="admin", metavar="admin", dest="sim_command")
    admin = admin_commands.add_parser("admin", help="drive a running simulator")
    which = admin.add_subparsers(title="actions", metavar="ACTION", dest="admin_command", required=True)
    load = which.add_parser("load", help="register the entries of a JSONL file, or N synthetic ones of a pair")
    load.add_argument("--file", metavar="JSONL")
    load.add_argument("--synthetic", type=int, metavar="N", help="generated inside the simulator (fast, for scale)")
    load.add_argument("--participant", metavar="ISPB", help="with --synthetic")
    load.add_argument("--key-type", choices=[k.value for k in KeyType], help="with --synthetic")
    load.add_argument("--seed", type=int, default=0, help="with --synthetic")
    remove = which.add_parser("remove", help="remove entries by CID")
    remove.add_argument("cids", nargs="+", metavar="CID")
    alter = which.add_parser("alter", help="replace the entry with the same id (its CID changes)")
    alter.add_argument("--entry", required=True, metavar="JSON")
    diverge = which.add_parser("diverge", help="add, remove and alter random entries of one pair")
    add_pair(diverge)
    for name in ("add", "remove", "alter"):
        diverge.add_argument(f"--{name}", type=int, default=0, metavar="N")
    diverge.add_argument("--seed", type=int, default=0)
    faults = which.add_parser("faults", help="replace the fault settings (no options: no faults)")
    faults.add_argument("--unavailable-ratio", type=float, default=0.0)
    faults.add_argument("--latency-ms", type=int, default=0)
    faults.add_argument("--fail-next", action="append", metavar="METHOD=N")
    faults.add_argument("--file-outcome", default="AVAILABLE", choices=["AVAILABLE", "ERROR", "UNAVAILABLE"])
    faults.add_argument("--page-delay-ms", type=int, default=0, help="before each page of a CID list")
    stats = which.add_parser("stats", help="per-RPC call counters")
    stats.add_argument("--json", action="store_true")
    which.add_parser("reset", help="forget every entry, file, counter and fault")
    for parser in which.choices.values():
        parser.add_argument(
            "--simulator-address",
            metavar="HOST:PORT",
            help="the simulator's gRPC port (default: $CIDSYNC_SIMULATOR_ADDRESS, else the running dev stack's)",
        )
        parser.set_defaults(handler=run_async(_admin))
