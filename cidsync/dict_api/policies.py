"""DICT's rate-limit policies for the operations cidsync calls (the API's "limitação de requisições").

Each operation spends a token of one bucket per participant; a 429 means the bucket is empty, and the
bucket's state (`GET /policies/{policy}`) says when the next token comes. The published rates are here so
that the budgets and the simulator agree with DICT; the live state is always asked of DICT itself.
"""

from __future__ import annotations

from enum import StrEnum


class Operation(StrEnum):
    CREATE_SYNC_VERIFICATION = "createSyncVerification"
    CREATE_CID_SET_FILE = "createCidSetFile"
    GET_CID_SET_FILE = "getCidSetFile"
    LIST_CID_SET_EVENTS = "listCidSetEvents"
    GET_ENTRY_BY_CID = "getEntryByCid"


POLICY_OF: dict[Operation, str] = {
    Operation.CREATE_SYNC_VERIFICATION: "SYNC_VERIFICATIONS_WRITE",  # 10/min, bucket 50
    Operation.CREATE_CID_SET_FILE: "CIDS_FILES_WRITE",  # 40/day, bucket 200
    Operation.GET_CID_SET_FILE: "CIDS_FILES_READ",  # 10/min, bucket 50
    Operation.LIST_CID_SET_EVENTS: "CIDS_EVENTS_LIST",  # 20/min, bucket 100
    Operation.GET_ENTRY_BY_CID: "CIDS_ENTRIES_READ",  # 1200/min, bucket 36000
}

# The Bridge contract's method that calls each operation (`bridge serve` maps one to the other, and the
# simulator names its buckets after the methods).
METHOD_OF: dict[Operation, str] = {
    Operation.CREATE_SYNC_VERIFICATION: "VerifySync",
    Operation.CREATE_CID_SET_FILE: "CreateCidSetFile",
    Operation.GET_CID_SET_FILE: "GetCidSetFile",
    Operation.LIST_CID_SET_EVENTS: "ListCidSetEvents",
    Operation.GET_ENTRY_BY_CID: "GetEntryByCid",
}
OPERATION_OF_METHOD: dict[str, Operation] = {method: operation for operation, method in METHOD_OF.items()}
OPERATION_OF_POLICY: dict[str, Operation] = {policy: operation for operation, policy in POLICY_OF.items()}
