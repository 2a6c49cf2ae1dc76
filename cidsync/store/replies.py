"""Reading what Redis answers: the store's client never decodes responses (the VSync is raw bytes)."""

from __future__ import annotations

from datetime import datetime, timedelta

from cidsync.anchor import EPOCH
from cidsync.cid import ZERO_VSYNC


def vsync_hex(raw: bytes | str | None) -> str:
    # str only satisfies typing: the client answers bytes.
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    return raw.hex().rjust(64, "0") if raw else ZERO_VSYNC


def millis(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
