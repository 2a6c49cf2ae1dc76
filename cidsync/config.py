"""Configuration, resolved the same way by every command (docs/design.md §7).

For each setting the first of these wins: a command-line flag, the environment variable, the endpoint
of a running `cidsync dev up` (its state file), the built-in default. So a developer types nothing,
and production sets the environment (or the flags) and never touches a state file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path

from cidsync.bridge.budget import parse_budgets
from cidsync.entry import PARTICIPANT
from cidsync.errors import InvalidInput, Problem

# Setting name -> environment variable; the names docs/design.md §7 fixes.
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
}
DEFAULTS: Mapping[str, str] = {
    "temporal_namespace": "default",
    "task_queue": "cidsync",
    "pulsar_namespace": "public/default",
    "participants": "",
    "mark_ttl_seconds": "86400",
    "waiting_period_days": "30",
}
# Only for a developer's machine: production sets CIDSYNC_KEY_SECRET (the worker warns when it is unset).
DEVELOPMENT_KEY_SECRET = "cidsync-development-key-secret"
STATE_DIR_VARIABLE = "CIDSYNC_STATE_DIR"
# How long the worker and the starter keep trying to reach Temporal and Redis when they start before
# those answer (a restart of the whole stack, a rolling deploy); one-shot commands fail fast.
ROLE_CONNECT_WAIT = timedelta(minutes=5)


class NotConfigured(RuntimeError):
    """A setting a command needs has no value anywhere (no flag, no variable, no dev stack)."""


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where `cidsync dev up` keeps its state: `$CIDSYNC_STATE_DIR`, else `.cidsync` here."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(STATE_DIR_VARIABLE) or ".cidsync").resolve()


@dataclass(frozen=True)
class Settings:
    temporal_address: str | None = None
    temporal_namespace: str = "default"
    task_queue: str = "cidsync"
    pulsar_url: str | None = None
    pulsar_namespace: str = "public/default"
    redis_url: str | None = None
    bridge_address: str | None = None
    participants: tuple[str, ...] = ()
    key_secret: str | None = None
    mark_ttl_seconds: int = 86_400
    waiting_period_days: float = 30.0
    metrics_bind: str | None = None  # host:port of the worker's Prometheus endpoint (Temporal's and ours)
    codec_keys_file: str | None = None  # the payload codec's keys (cidsync.codec); inline keys: CIDSYNC_CODEC_KEYS
    # DICT's rate limits kept on our side (cidsync.bridge.budget): "" DICT's published ones, "off" none,
    # or "VerifySync=10/50,ListCidSetEvents=20/100" (per minute / bucket size) for others.
    dict_budgets: str = ""

    @property
    def key_secret_bytes(self) -> bytes:
        """The secret the store hashes PIX keys with (the development one when none is set)."""
        return (self.key_secret or DEVELOPMENT_KEY_SECRET).encode()

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
    for field in fields(Settings):
        name = field.name
        for candidate in (flags.get(name), environ.get(ENVIRONMENT[name]), dev_endpoints.get(name)):
            if candidate:
                resolved[name] = candidate
                break
        else:
            if name in DEFAULTS:
                resolved[name] = DEFAULTS[name]

    participants = parse_participants(resolved.pop("participants", ""), ENVIRONMENT["participants"])
    numbers = {name: _positive(resolved.pop(name), name) for name in ("mark_ttl_seconds", "waiting_period_days")}
    if resolved.get("dict_budgets", "off") != "off":
        try:
            parse_budgets(resolved["dict_budgets"])
        except ValueError as error:
            variable = ENVIRONMENT["dict_budgets"]
            raise InvalidInput(variable, [Problem(variable, str(error))]) from None
    return Settings(
        participants=participants,
        mark_ttl_seconds=int(numbers["mark_ttl_seconds"]),
        waiting_period_days=numbers["waiting_period_days"],
        **resolved,
    )


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


def _running_dev_stack(directory: Path) -> Mapping[str, str | None]:
    # Imported here: the dev stack pulls in psutil and process code no production command needs.
    from cidsync.devstack.stack import read_state

    state = read_state(directory)
    if state is None:
        return {}
    running = state.running()
    endpoints = state.endpoints()
    owner = {
        "temporal_address": "temporal",
        "temporal_namespace": "temporal",
        "pulsar_url": "pulsar",
        "pulsar_namespace": "pulsar",
        "redis_url": "redis",
        "bridge_address": "bridge",
        "codec_keys_file": "codec",
    }
    return {name: value for name, value in endpoints.items() if running.get(owner.get(name, ""), False)}
