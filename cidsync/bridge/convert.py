"""Between the Bridge's protobuf messages and the domain types; one place for the enum prefixes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from cidsync.bridge import models
from cidsync.bridge.v2 import bridge_pb2 as pb
from cidsync.entry import AccountType, DictEntry, KeyType, OwnerType, parse_dict_entry
from cidsync.errors import InvalidInput, Problem


def _to_pb(enum: Any, prefix: str, value: str) -> int:
    return int(enum.Value(prefix + value))


def _from_pb(enum: Any, prefix: str, value: int, what: str) -> str:
    try:
        name = str(enum.Name(value))
    except ValueError:
        name = ""
    if not name.startswith(prefix) or name.endswith("UNSPECIFIED"):
        raise InvalidInput(what, [Problem(what, "must be set to one of the contract's values")])
    return name.removeprefix(prefix)


def key_type_to_pb(key_type: KeyType) -> pb.KeyType.ValueType:
    return pb.KeyType.ValueType(_to_pb(pb.KeyType, "KEY_TYPE_", key_type.value))


def key_type_from_pb(value: int) -> KeyType:
    return KeyType(_from_pb(pb.KeyType, "KEY_TYPE_", value, "key_type"))


def file_status_to_pb(status: models.FileStatus) -> pb.CidSetFileStatus.ValueType:
    return pb.CidSetFileStatus.ValueType(_to_pb(pb.CidSetFileStatus, "CID_SET_FILE_STATUS_", status.value))


def file_status_from_pb(value: int) -> models.FileStatus:
    return models.FileStatus(_from_pb(pb.CidSetFileStatus, "CID_SET_FILE_STATUS_", value, "status"))


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def moment(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def entry_to_pb(entry: DictEntry) -> pb.Entry:
    return pb.Entry(
        request_id=str(entry.request_id),
        key_type=key_type_to_pb(entry.key_type),
        key=entry.key,
        participant=entry.participant,
        branch=entry.branch or "",
        account_number=entry.account_number,
        account_type=pb.AccountType.ValueType(_to_pb(pb.AccountType, "ACCOUNT_TYPE_", entry.account_type.value)),
        account_opened_at=timestamp(entry.account_opened_at),
        owner_type=pb.OwnerType.ValueType(_to_pb(pb.OwnerType, "OWNER_TYPE_", entry.owner_type.value)),
        owner_name=entry.owner_name,
        owner_trade_name=entry.owner_trade_name or "",
        owner_tax_id=entry.owner_tax_id,
    )


def entry_from_pb(message: pb.Entry) -> DictEntry:
    """Validated like any entry: what comes from DICT is checked before it reaches our store."""
    return parse_dict_entry(
        {
            "request_id": message.request_id,
            "key_type": key_type_from_pb(message.key_type),
            "key": message.key,
            "participant": message.participant,
            "branch": message.branch or None,
            "account_number": message.account_number,
            "account_type": AccountType(
                _from_pb(pb.AccountType, "ACCOUNT_TYPE_", message.account_type, "account_type")
            ),
            "account_opened_at": moment(message.account_opened_at),
            "owner_type": OwnerType(_from_pb(pb.OwnerType, "OWNER_TYPE_", message.owner_type, "owner_type")),
            "owner_name": message.owner_name,
            "owner_trade_name": message.owner_trade_name or None,
            "owner_tax_id": message.owner_tax_id,
        }
    )


def cid_set_file_from_pb(message: pb.CidSetFile) -> models.CIDSetFile:
    return models.CIDSetFile(
        file_id=message.file_id,
        participant=message.participant,
        key_type=key_type_from_pb(message.key_type),
        status=file_status_from_pb(message.status),
        requested_at=moment(message.requested_at),
        cid_count=message.cid_count,
        byte_size=message.byte_size,
        sha256=message.sha256,
        available_at=moment(message.available_at) if message.HasField("available_at") else None,
        created_at=moment(message.created_at) if message.HasField("created_at") else None,
    )


def bucket_to_pb(bucket: models.RateLimitBucket) -> pb.RateLimitBucket:
    return pb.RateLimitBucket(
        policy=bucket.policy,
        available_tokens=bucket.available_tokens,
        capacity=bucket.capacity,
        refill_tokens=bucket.refill_tokens,
        refill_period_seconds=bucket.refill_period_seconds,
        observed_at=timestamp(bucket.observed_at),
    )


def bucket_from_pb(message: pb.RateLimitBucket) -> models.RateLimitBucket:
    return models.RateLimitBucket(
        policy=message.policy,
        available_tokens=message.available_tokens,
        capacity=message.capacity,
        refill_tokens=message.refill_tokens,
        refill_period_seconds=message.refill_period_seconds,
        observed_at=moment(message.observed_at),
    )
