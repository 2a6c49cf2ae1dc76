"""Typed Bridge errors, one per gRPC status code the contract uses (proto/cidsync/bridge/v2).

Callers branch on the type (a workflow treats `InvalidArgument` as final and `RateLimited` as "wait
`retry_after` seconds"), never on status codes or message text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

RETRY_AFTER = "retry-after"  # trailing metadata of RESOURCE_EXHAUSTED: seconds, a decimal number


class BridgeError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str, method: str = "") -> None:
        self.details = details
        self.method = method
        prefix = f"{method}: " if method else ""
        super().__init__(f"{prefix}{self.code.name}: {details}")


class InvalidArgument(BridgeError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class PermissionDenied(BridgeError):
    code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(BridgeError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(BridgeError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class RateLimited(BridgeError):
    """DICT's token bucket is empty (HTTP 429); try again after `retry_after` seconds."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, details: str, method: str = "", retry_after: float = 60.0) -> None:
        self.retry_after = retry_after
        super().__init__(f"{details} (retry after {retry_after:.1f} s)", method)


class Unavailable(BridgeError):
    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, details: str, method: str = "", retry_after: float | None = None) -> None:
        super().__init__(details, method)
        self.retry_after = retry_after  # DICT's Retry-After, when it sent one


class DataLoss(BridgeError):
    """DICT's answer was refused: unsigned, badly signed, signed by a key not trusted, or a CID file that
    is not what DICT announced. Never data; a retry asks again."""

    code = grpc.StatusCode.DATA_LOSS


class Internal(BridgeError):
    """DICT failed (500)."""

    code = grpc.StatusCode.INTERNAL


class DeadlineExceeded(BridgeError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


_BY_CODE: dict[grpc.StatusCode, type[BridgeError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        PermissionDenied,
        NotFound,
        FailedPrecondition,
        Unavailable,
        DataLoss,
        Internal,
        DeadlineExceeded,
    )
}


def retry_after_of(metadata: Iterable[Any] | None, default: float = 60.0) -> float:
    found = _retry_after(metadata)
    return default if found is None else found


def _retry_after(metadata: Iterable[Any] | None) -> float | None:
    for key, value in metadata or ():
        if key == RETRY_AFTER:
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None


def from_rpc_error(error: grpc.aio.AioRpcError, method: str) -> BridgeError:
    code = error.code()
    details = error.details() or code.name
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return RateLimited(details, method, retry_after_of(error.trailing_metadata()))
    if code is grpc.StatusCode.UNAVAILABLE:
        return Unavailable(details, method, _retry_after(error.trailing_metadata()))
    cls = _BY_CODE.get(code)
    if cls is None:
        generic = BridgeError(f"{code.name}: {details}", method)
        generic.code = code
        return generic
    return cls(details, method)
