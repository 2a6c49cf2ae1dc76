"""`temporal-dev.yaml`: the declaration of the embedded stack, validated.

Relative paths are taken from the YAML file's own folder, so the stack is the same whatever the
current directory. A port of 0 means "a free port, chosen at start and remembered in the state file".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from cidsync.errors import InvalidInput, Problem, validated

Port = int


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TemporalSpec(_Spec):
    port: Port = Field(default=7233, ge=0, le=65535)
    # None: headless (no Web UI).
    ui_port: Port | None = Field(default=8233, ge=0, le=65535)
    namespace: str = "default"
    # None: in memory, lost when the server stops.
    db_filename: Path | None = None
    log_level: Literal["debug", "info", "warn", "error"] = "warn"
    # `--sqlite-pragma NAME=VALUE` for a database file, e.g. journal_mode: wal (see temporal-dev.yaml).
    sqlite_pragmas: dict[str, str] = Field(default_factory=dict)
    dynamic_config: dict[str, Any] = Field(default_factory=dict)
    search_attributes: dict[str, Literal["Text", "Keyword", "Int", "Double", "Bool", "Datetime", "KeywordList"]] = (
        Field(default_factory=dict)
    )


# What temporal-dev.yaml gives the dev server's database file (the README says why).
DEV_SQLITE_PRAGMAS = {"journal_mode": "wal", "synchronous": "normal"}


def headless_temporal(db_filename: Path) -> TemporalSpec:
    """The dev server as the bench and the chaos run start it: no UI, errors only, the dev stack's database
    settings and search attributes, on a free port."""
    from cidsync.naming import search_attribute_types

    return TemporalSpec(
        port=0,
        ui_port=None,
        db_filename=db_filename,
        log_level="error",
        sqlite_pragmas=DEV_SQLITE_PRAGMAS,
        search_attributes=search_attribute_types(),
    )


class PulsarSpec(_Spec):
    port: Port = Field(default=6650, ge=0, le=65535)
    metrics_port: Port = Field(default=0, ge=0, le=65535)
    data_dir: Path = Path(".cidsync/pulsar")
    namespace: str = "public/default"


class RedisSpec(_Spec):
    port: Port = Field(default=6379, ge=0, le=65535)
    data_dir: Path = Path(".cidsync/redis")
    appendonly: bool = True


class SimulatorSpec(_Spec):
    """The DICT simulator (cidsync bridge-sim): DICT API v2 for `bridge serve`, and the Bridge contract on
    its gRPC port, which the tooling drives (admin) and the workers call when `bridge` is off."""

    port: Port = Field(default=50052, ge=0, le=65535)  # gRPC: the Bridge contract and the admin calls
    api_port: Port = Field(default=16522, ge=0, le=65535)  # DICT API v2 (HTTPS, mutual TLS, signed XML)
    # DICT is kept here across restarts (a journal of its changes), as Redis keeps the CID store;
    # None: in memory, empty at every start. (The folder's name is from before `bridge serve`, kept so a
    # developer's DICT outlives the upgrade.)
    data_dir: Path | None = Path(".cidsync/bridge")
    seed_file: Path | None = None  # registered at the first start only (not over a kept DICT)
    file_delay_seconds: float = Field(default=2.0, ge=0)
    file_delay_per_cid_ms: float = Field(default=0.0, ge=0)  # more time per CID of the set
    event_delay_seconds: float = Field(default=0.0, ge=0)  # a change shows in DICT's event log this late
    event_jitter_seconds: float = Field(default=0.0, ge=0)  # give or take this much
    time_scale: float = Field(default=1.0, gt=0)
    rate_limits: bool = True


class BridgeSpec(_Spec):
    """`cidsync bridge serve`, the Bridge the workers call, in front of the simulator's DICT API v2 with
    certificates made for the stack at its first `up` (`<state_dir>/pki`). Off: the workers call the
    simulator's gRPC face directly (the Bridge contract without DICT's HTTPS, XML and signatures)."""

    enabled: bool = True
    port: Port = Field(default=50051, ge=0, le=65535)
    metrics_port: Port | None = Field(default=0, ge=0, le=65535)  # as the worker's
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class CodecSpec(_Spec):
    """`cidsync codec-server` with a key made for the stack, so every role encrypts and the UI decodes."""

    enabled: bool = False
    port: Port = Field(default=8081, ge=0, le=65535)


MAX_REPLICAS = 4


class WorkerSpec(_Spec):
    """`cidsync worker`, against the stack's own Temporal and Redis."""

    enabled: bool = True
    # Processes polling the task queue; the second is the service `worker-2`, and so on, each with its own
    # log and metrics port. One Python process uses one core.
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    task_queue: str = "cidsync"
    graceful_shutdown_seconds: float = Field(default=10.0, gt=0)
    # /metrics, /healthz, /readyz on this loopback port (0: a free one); null: no endpoint
    metrics_port: Port | None = Field(default=0, ge=0, le=65535)
    # The workers' build id (Worker Versioning); null: the release's (`cidsync worker`'s default)
    build_id: str | None = None


class StarterSpec(_Spec):
    """`cidsync starter`, from the stack's Pulsar to its Temporal."""

    enabled: bool = True
    # Consumers of the same subscription.
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    mode: Literal["per-event", "batch"] = "per-event"
    # Shared, not the starter's production default Key_Shared: pulsar-lite's Key_Shared dispatcher never
    # redelivers a message nacked a second time (queued for redelivery, never dispatched, not even to a
    # new consumer), so an event whose start failed twice was lost (docs/stack.md). Correctness never rests
    # on Key_Shared: the versioned apply orders each key's changes by sequence.
    subscription_type: Literal["key_shared", "shared"] = "shared"
    waiting_period_days: float = Field(default=30.0, gt=0)
    nack_delay_seconds: float = Field(default=60.0, gt=0)  # `--nack-delay-s`: Pulsar's default
    metrics_port: Port | None = Field(default=0, ge=0, le=65535)  # as the worker's


class FollowSpec(_Spec):
    """The followers of DICT's CID event log `dev up` starts (`cidsync follow ensure`), one per key type
    of each participant: those listed, else CIDSYNC_PARTICIPANTS; none when both are empty."""

    enabled: bool = True
    participants: list[str] = Field(default_factory=list)
    grace_seconds: float = Field(default=120.0, gt=0)
    poll_seconds: float = Field(default=15.0, gt=0)
    idle_seconds: float = Field(default=60.0, gt=0)


class StackSpec(_Spec):
    state_dir: Path = Path(".cidsync")
    temporal: TemporalSpec = TemporalSpec()
    pulsar: PulsarSpec = PulsarSpec()
    redis: RedisSpec = RedisSpec()
    simulator: SimulatorSpec = SimulatorSpec()
    bridge: BridgeSpec = BridgeSpec()
    codec: CodecSpec = CodecSpec()
    worker: WorkerSpec = WorkerSpec()
    starter: StarterSpec = StarterSpec()
    follow: FollowSpec = FollowSpec()

    def resolved(self, base: Path) -> StackSpec:
        """The same spec with every relative path anchored at `base`."""

        def anchor(path: Path) -> Path:
            return path if path.is_absolute() else (base / path).resolve()

        db = self.temporal.db_filename
        seed = self.simulator.seed_file
        dict_dir = self.simulator.data_dir
        return self.model_copy(
            update={
                "state_dir": anchor(self.state_dir),
                "temporal": self.temporal.model_copy(update={"db_filename": anchor(db) if db else None}),
                "pulsar": self.pulsar.model_copy(update={"data_dir": anchor(self.pulsar.data_dir)}),
                "redis": self.redis.model_copy(update={"data_dir": anchor(self.redis.data_dir)}),
                "simulator": self.simulator.model_copy(
                    update={
                        "seed_file": anchor(seed) if seed else None,
                        "data_dir": anchor(dict_dir) if dict_dir else None,
                    }
                ),
            }
        )


def load_spec(path: Path) -> StackSpec:
    """Read and validate a stack file; raises `InvalidInput` naming every bad setting."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise InvalidInput(str(path), [Problem(str(path), f"cannot be read: {error.strerror}")]) from None
    except yaml.YAMLError as error:
        raise InvalidInput(str(path), [Problem(str(path), f"is not valid YAML: {error}")]) from None
    return validated(StackSpec, raw, where=path.name).resolved(path.parent.resolve())
