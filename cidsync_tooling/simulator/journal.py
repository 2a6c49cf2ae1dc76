"""The simulator's DICT kept on disk: an append-only journal of the changes made to it, replayed at start.

A dev stack keeps Redis (AOF) and Temporal (a database file) across `cidsync dev down` / `up`; a DICT
that came back empty would disagree with every CID the stack holds, and a reconciliation would then ask
to remove them all. The journal records each change to DICT as it was asked for, with its time:
registering, altering and removing an entry, a synthetic load (as its count and seed: the entries follow
from them), and a CID file's request (its CIDs follow from the state at that point of the replay).
Replaying it gives back the entries, the VSyncs, the CID event log with its timestamps, the files and
their idempotency keys. Faults, counters and rate-limit buckets are the running server's own and start
afresh.

One line is written and flushed per change, after the change is made: a killed simulator loses nothing
it answered; a line cut short by the kill is dropped at the next start (the caller never got its answer).
The page cache is not synced: a crash of the machine may lose the last changes, as the dev stack's Redis
(`appendfsync everysec`) may.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from cidsync.bridge.models import FileStatus
from cidsync.entry import KeyType, parse_entry_json
from cidsync.errors import InvalidInput, Problem
from cidsync_tooling.simulator.dict_state import EPOCH, MICROSECOND, SimulatedDict

logger = logging.getLogger(__name__)

FORMAT = 1


def _moment(record: dict[str, Any]) -> datetime:
    return EPOCH + int(record["at"]) * MICROSECOND


class Journal:
    """Append-only JSON Lines. `records()` reads what a previous run wrote (a torn last line is cut off
    the file); `append` writes one change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._lock = threading.Lock()  # LoadSynthetic changes DICT on a thread of its own

    def records(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        good = 0
        with self.path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                try:
                    if not line.endswith(b"\n"):
                        raise ValueError("no line end")
                    record = json.loads(line)
                    if not isinstance(record, dict) or "op" not in record:
                        raise ValueError("not a change")
                except ValueError:
                    logger.warning(
                        "%s: line %d is incomplete (the simulator was stopped while writing it); "
                        "the journal ends before it",
                        self.path,
                        number,
                    )
                    break
                good += len(line)
                yield record
        if good != self.path.stat().st_size:
            with self.path.open("r+b") as truncated:
                truncated.truncate(good)

    def restore(self, into: SimulatedDict) -> int:
        """Replay the journal into an empty DICT, then record its new changes; the number replayed. Each
        change is made again through the method that made it, at its recorded time, so the CIDs, VSyncs
        and the event log's timestamps come back as they were."""
        into.record = None
        count = 0
        for record in self.records():
            op = record["op"]
            if op == "format":
                if record.get("version") != FORMAT:
                    raise InvalidInput(
                        str(self.path),
                        [
                            Problem(
                                "version",
                                f"journal format {record.get('version')} "
                                f"is not {FORMAT}: move the file away to start empty",
                            )
                        ],
                    )
                continue
            now = _moment(record)
            if op == "register":
                into.register(parse_entry_json(record["entry"]), now)
            elif op == "alter":
                into.alter(parse_entry_json(record["entry"]), now)
            elif op == "remove":
                into.remove(record["cid"], now)
            elif op == "synthetic":
                into.load_synthetic(
                    (record["participant"], KeyType(record["key_type"])), record["count"], record["seed"], now=now
                )
            elif op == "file":  # recorded at its snapshot: its CIDs are the pair's at this point of the replay
                outcome = FileStatus(record["outcome"])
                requested = EPOCH + int(record.get("requested_at", record["at"])) * MICROSECOND
                file = into.new_file(
                    record["participant"],
                    KeyType(record["key_type"]),
                    requested,
                    record.get("request_id", ""),
                    file_id=record["file_id"],
                )
                into.snapshot(file, now, outcome)
                file.seal(outcome, now)
            else:
                raise InvalidInput(str(self.path), [Problem("op", f"unknown change {op!r}")])
            count += 1
        into.record = self.append
        return count

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
                if self._file.tell() == 0:
                    self._file.write(json.dumps({"op": "format", "version": FORMAT}) + "\n")
            self._file.write(line)
            self._file.flush()

    def clear(self) -> None:
        """Forget everything (the admin `Reset`)."""
        with self._lock:
            self._close()
            self.path.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
