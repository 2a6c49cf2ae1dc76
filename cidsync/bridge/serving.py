"""The rules every server of the Bridge contract follows (`bridge serve` and the DICT simulator): page
tokens and sizes, the events page's limit, the participant check, and keepalive that lets the workers'
clients ping. One place, so the production Bridge and the simulator the tests use cannot drift apart."""

from __future__ import annotations

import base64
import binascii

from cidsync.entry import check_participant
from cidsync.errors import InvalidInput, Problem

DEFAULT_PAGE_SIZE = 1_000
MAX_PAGE_SIZE = 10_000
MAX_EVENTS = 200  # a ListCidSetEvents page, as DICT's

# Clients ping every 10 s (cidsync.bridge.client); a server that refuses pings that often would close them.
SERVER_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
]


def participant_of(value: str) -> str:
    return check_participant(value, field="participant")


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidInput("request", [Problem("page_size", "must not be negative")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def page_token(file_id: str, offset: int) -> str:
    """An opaque page token: the file and the offset of the next page."""
    return base64.urlsafe_b64encode(f"{file_id}:{offset}".encode()).decode()


def offset_of(file_id: str, token: str) -> int:
    """The offset a page token of this file points at (0 for none); any other token is refused."""
    if not token:
        return 0
    try:
        owner, _, offset = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if owner == file_id and int(offset) >= 0:
            return int(offset)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidInput("request", [Problem("page_token", "is not a page token of this file")])
