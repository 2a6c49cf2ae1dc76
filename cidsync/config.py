"""Configuration, resolved the same way by every command (docs/design.md §7).

For each setting the first of these wins: a command-line flag, the environment variable, the endpoint
of a running `cidsync dev up` (its state file), the built-in default. So a developer types nothing,
and production sets the environment (or the flags) and never touches a state file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

from cidsync import __version__
from cidsync.bridge.budget import parse_budgets
from cidsync.entry import PARTICIPANT
from cidsync.errors import CommandFailed, InvalidInput, Problem
from cidsync.process_start import still_running

# Setting name -> environment variable; the names docs/design.md §7 fixes. The flags are these names with
# dashes (`--redis-url`), made by cidsync.cli.options from this table and `HELP`.
ENVIRONMENT: Mapping[str, str] = {
    "temporal_address": "TEMPORAL_ADDRESS",
    "temporal_namespace": "TEMPORAL_NAMESPACE",
    "task_queue": "CIDSYNC_TASK_QUEUE",
    "pulsar_url": "CIDSYNC_PULSAR_URL",
    "pulsar_namespace": "CIDSYNC_PULSAR_NAMESPACE",
    "redis_url": "CIDSYNC_REDIS_URL",
    "bridge_address": "CIDSYNC_BRIDGE_ADDRESS",
    "participants": "CIDSYNC_PARTICIPANTS",
    "key_secret": "CIDSYNC_KEY_SECRET",
    "mark_ttl_seconds": "CIDSYNC_MARK_TTL_SECONDS",
    "waiting_period_days": "CIDSYNC_WAITING_PERIOD_DAYS",
    "metrics_bind": "CIDSYNC_METRICS_BIND",
    "codec_keys_file": "CIDSYNC_CODEC_KEYS_FILE",
    "dict_budgets": "CIDSYNC_DICT_BUDGETS",
    "dict_url": "CIDSYNC_DICT_URL",
    "dict_client_cert": "CIDSYNC_DICT_CLIENT_CERT",
    "dict_client_key": "CIDSYNC_DICT_CLIENT_KEY",
    "dict_ca": "CIDSYNC_DICT_CA",
    "dict_signer_cert": "CIDSYNC_DICT_SIGNER_CERT",
    "bridge_host": "CIDSYNC_BRIDGE_HOST",
    "bridge_port": "CIDSYNC_BRIDGE_PORT",
    "bridge_spool_dir": "CIDSYNC_BRIDGE_SPOOL_DIR",
    "bridge_tls_server_cert": "CIDSYNC_BRIDGE_TLS_SERVER_CERT",
    "bridge_tls_server_key": "CIDSYNC_BRIDGE_TLS_SERVER_KEY",
    "bridge_tls_client_ca": "CIDSYNC_BRIDGE_TLS_CLIENT_CA",
    "deployment_name": "CIDSYNC_DEPLOYMENT_NAME",
    "build_id": "CIDSYNC_BUILD_ID",
}
# Only for a developer's machine: production sets CIDSYNC_KEY_SECRET (the worker warns when it is unset).
DEVELOPMENT_KEY_SECRET = "cidsync-development-key-secret"
STATE_DIR_VARIABLE = "CIDSYNC_STATE_DIR"
# How long the worker and the starter keep trying to reach Temporal and Redis when they start before
# those answer (a restart of the whole stack, a rolling deploy); one-shot commands fail fast.
ROLE_CONNECT_WAIT = timedelta(minutes=5)


class NotConfigured(CommandFailed):
    """A setting a command needs has no value anywhere (no flag, no variable, no dev stack)."""


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where `cidsync dev up` keeps its state: `$CIDSYNC_STATE_DIR`, else `.cidsync` here."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(STATE_DIR_VARIABLE) or ".cidsync").resolve()


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    """Every setting with its one default; `HELP` below says what each is for (the flags' help)."""

    temporal_address: str | None = _setting(None, "host:port of Temporal's frontend")
    temporal_namespace: str = _setting("default", "the Temporal namespace")
    task_queue: str = _setting("cidsync", "the task queue of cidsync's workflows and activities")
    pulsar_url: str | None = _setting(None, "pulsar:// or pulsar+ssl:// URL of the broker")
    pulsar_namespace: str = _setting("public/default", "tenant/namespace of cidsync's topics")
    redis_url: str | None = _setting(None, "redis://, rediss:// or redis+cluster:// URL of the CID store")
    bridge_address: str | None = _setting(None, "host:port of the Bridge (DICT)")
    participants: tuple[str, ...] = _setting((), "the participants (ISPB, 8 digits) this installation serves")
    key_secret: str | None = _setting(None, "the secret PIX keys are hashed with (every role shares one)")
    mark_ttl_seconds: int = _setting(86_400, "how long an applied event's idempotency mark is kept")
    waiting_period_days: float = _setting(30.0, "how long a WAITING_PERIOD delete waits")
    metrics_bind: str | None = _setting(
        None, "host:port where /metrics (Temporal's and ours), /healthz and /readyz are served; port 0 picks one"
    )
    codec_keys_file: str | None = _setting(None, "the payload codec's keys (inline keys: CIDSYNC_CODEC_KEYS)")
    dict_budgets: str = _setting(
        "",
        "DICT's rate limits kept on our side: empty for DICT's published ones, off for none, or "
        "VerifySync=10/50,ListCidSetEvents=20/100 (per minute / bucket size)",
    )
    dict_url: str | None = _setting(
        None, "DICT API v2's base URL, e.g. https://dict-h.pi.rsfn.net.br:16522/api/v2/ (homologation)"
    )
    dict_client_cert: str | None = _setting(
        None, "the participant's certificate (PEM): mutual TLS with DICT and the signature of requests"
    )
    dict_client_key: str | None = _setting(None, "the private key of that certificate (PEM)")
    dict_ca: str | None = _setting(None, "the CAs of DICT's TLS certificate (PEM)")
    dict_signer_cert: str | None = _setting(
        None, "DICT's signing certificates (PEM bundle; a rotation is a change of this file)"
    )
    bridge_host: str = _setting(
        "[::]", "the address `cidsync bridge serve` listens on: [::] every interface, 127.0.0.1 this machine only"
    )
    bridge_port: int = _setting(50051, "the port `cidsync bridge serve` listens on (gRPC)")
    bridge_spool_dir: str = _setting(
        "/var/lib/cidsync/bridge-spool", "where `bridge serve` keeps the CID files it downloaded (a volume)"
    )
    bridge_tls_server_cert: str | None = _setting(
        None, "`bridge serve`'s TLS certificate (PEM); unset: plain gRPC, for loopback only"
    )
    bridge_tls_server_key: str | None = _setting(None, "the key of that certificate (PEM)")
    bridge_tls_client_ca: str | None = _setting(
        None, "the CAs the workers' client certificates must chain to: mutual TLS (PEM)"
    )

    deployment_name: str = _setting("cidsync", "the Worker Deployment the worker belongs to (Worker Versioning)")
    build_id: str = _setting(
        __version__, "the worker's build id in its deployment: one per build of the code (default: the release)"
    )

    @property
    def key_secret_bytes(self) -> bytes:
        """The secret the store hashes PIX keys with (the development one when none is set: for the commands
        that only read the store; a role requires one, `role_key_secret`)."""
        return (self.key_secret or DEVELOPMENT_KEY_SECRET).encode()

    def role_key_secret(self) -> bytes:
        """The key secret a worker or a starter hashes with: required. A role that fell back to the
        development secret would write key ids no other role of the installation finds (the store refuses
        it, but only once it reaches the store). The dev stack sets the development secret explicitly."""
        if not self.key_secret:
            raise InvalidInput(
                "settings",
                [
                    Problem(
                        "CIDSYNC_KEY_SECRET",
                        "not set: the secret every role of an installation hashes PIX keys with "
                        f"(the dev stack sets {DEVELOPMENT_KEY_SECRET!r})",
                    )
                ],
            )
        return self.key_secret.encode()

    def require(self, name: str) -> str:
        value = getattr(self, name)
        if not value:
            raise NotConfigured(
                f"no {name.replace('_', ' ')}: set {ENVIRONMENT[name]}, pass --{name.replace('_', '-')}, "
                "or start the embedded stack with `cidsync dev up`"
            )
        return str(value)


def parse_participants(raw: str, source: str) -> tuple[str, ...]:
    values = tuple(p.strip() for p in raw.split(",") if p.strip())
    bad = [p for p in values if not PARTICIPANT.fullmatch(p)]
    if bad:
        raise InvalidInput(source, [Problem(source, "each participant (ISPB) must be exactly 8 digits")])
    return values


def load_settings(
    flags: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
    dev_endpoints: Mapping[str, str | None] | None = None,
) -> Settings:
    """Resolve every setting; `dev_endpoints` defaults to those of the running dev stack, if any."""
    flags = flags or {}
    environ = os.environ if environ is None else environ
    if dev_endpoints is None:
        dev_endpoints = _running_dev_stack(state_dir(environ))

    resolved: dict[str, str] = {}
    for setting in fields(Settings):
        name = setting.name
        for candidate in (flags.get(name), environ.get(ENVIRONMENT[name]), dev_endpoints.get(name)):
            if candidate:
                resolved[name] = candidate
                break

    # What no source gave keeps the dataclass's default; what one gave is text, parsed here.
    typed: dict[str, Any] = dict(resolved)
    if "participants" in resolved:
        typed["participants"] = parse_participants(resolved["participants"], ENVIRONMENT["participants"])
    if "mark_ttl_seconds" in resolved:
        typed["mark_ttl_seconds"] = int(_positive(resolved["mark_ttl_seconds"], "mark_ttl_seconds"))
    if "bridge_port" in resolved:
        typed["bridge_port"] = int(_positive(resolved["bridge_port"], "bridge_port"))
    if "waiting_period_days" in resolved:
        typed["waiting_period_days"] = _positive(resolved["waiting_period_days"], "waiting_period_days")
    if resolved.get("dict_budgets", "off") != "off":
        try:
            parse_budgets(resolved["dict_budgets"])
        except ValueError as error:
            variable = ENVIRONMENT["dict_budgets"]
            raise InvalidInput(variable, [Problem(variable, str(error))]) from None
    return Settings(**typed)


HELP: Mapping[str, str] = {f.name: f.metadata["help"] for f in fields(Settings)}
DEFAULTS: Mapping[str, Any] = {f.name: f.default for f in fields(Settings)}


def _positive(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise InvalidInput(ENVIRONMENT[name], [Problem(ENVIRONMENT[name], "must be a positive number")])
    return value


def dev_stack_endpoints(environ: Mapping[str, str] | None = None) -> Mapping[str, str | None]:
    """The endpoints of the running dev stack (`$CIDSYNC_STATE_DIR`, else `.cidsync`); empty if none."""
    return _running_dev_stack(state_dir(os.environ if environ is None else environ))


# What a local stack (`cidsync dev up`, or any tool) publishes for the commands to find it: a JSON object
# of setting name -> {"value", "pid", "started"}: the process serving it and when it started
# (cidsync/process_start.py). A setting counts only while that process runs, so a stack that died leaves
# "not configured", never a dead address.
LOCAL_ENDPOINTS_FILE = "endpoints.json"


def _running_dev_stack(directory: Path) -> Mapping[str, str | None]:
    path = directory / LOCAL_ENDPOINTS_FILE
    try:
        published = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as error:
        raise NotConfigured(f"{path} is damaged ({error}); run `cidsync dev up` again or remove it") from None
    return {
        name: str(entry["value"])
        for name, entry in published.items()
        if "started" in entry and still_running(int(entry["pid"]), float(entry["started"]))
    }
