"""The XML of DICT API v2's reconciliation and policy operations: requests written, responses read.

Pure functions over lxml trees, no I/O, so they are tested on their own against documents shaped as the
specification's examples. What they enforce at this edge:
- CIDs, verifiers and file digests come back as lowercase hex (DICT may send upper case);
- times are UTC, written with milliseconds and `Z` as DICT writes them;
- a response that lacks a required element is `MalformedResponse`, naming the element, never a default;
- an unknown element or a new enumeration value in a list is ignored where the API says it may appear
  (its "evolution" section: new fields and new enumeration elements are compatible changes).

`DictEntry` holds what DICT says about an entry (getEntryByCid), personal data included: it lives in the
connector's memory only, to compute and check the CID and to answer the Bridge call, and is never logged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar
from urllib.parse import urlencode
from uuid import UUID

from lxml import etree
from pydantic import BaseModel, ConfigDict

from cidsync.bridge.models import CIDEventType, FileStatus
from cidsync.cid import cid
from cidsync.dict_api.signature import PARSER
from cidsync.entry import AccountType, KeyType, OwnerType

E = TypeVar("E", bound=StrEnum)

PROBLEM_NS = "urn:ietf:rfc:7807"
ERROR_TYPE_PREFIX = "https://dict.pi.rsfn.net.br/api/v2/error/"


class MalformedResponse(Exception):
    """DICT answered with a document we cannot read as the operation's response."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class SyncVerificationReply(_Frozen):
    id: int
    ok: bool


class CidSetFileInfo(_Frozen):
    """A CID file as DICT describes it; `url`, `bytes`, `sha256` and `creation_time` once AVAILABLE."""

    id: int
    status: FileStatus
    participant: str
    key_type: KeyType
    request_time: datetime
    creation_time: datetime | None = None
    url: str | None = None
    bytes: int | None = None
    sha256: str | None = None


class CidSetEventItem(_Frozen):
    type: CIDEventType
    cid: str
    timestamp: datetime


class CidSetEventsPage(_Frozen):
    """One page of DICT's CID event log. `verifier_start` is the VSync after the page's first event and
    `verifier_end` after its last (not before the first); `end_time` is inclusive."""

    has_more: bool
    participant: str
    key_type: KeyType
    start_time: datetime
    end_time: datetime
    verifier_start: str
    verifier_end: str
    events: list[CidSetEventItem]


class DictEntry(_Frozen):
    """An entry as DICT holds it (getEntryByCid). Personal data: memory only, never logged."""

    key_type: KeyType
    key: str
    participant: str
    branch: str | None
    account_number: str
    account_type: AccountType
    opening_date: datetime
    owner_type: OwnerType
    owner_tax_id: str
    owner_name: str
    owner_trade_name: str | None
    creation_date: datetime
    key_ownership_date: datetime
    request_id: UUID

    def __repr__(self) -> str:  # a traceback or a stray log line shows no personal value
        return f"DictEntry(key_type={self.key_type.value}, participant={self.participant}, <personal data>)"

    __str__ = __repr__


class EntryByCid(_Frozen):
    cid: str
    entry: DictEntry

    def __repr__(self) -> str:
        return f"EntryByCid(cid={self.cid}, entry={self.entry!r})"

    __str__ = __repr__


class PolicyState(_Frozen):
    """A rate-limit bucket's state at the time of the call."""

    name: str
    available_tokens: int
    capacity: int
    refill_tokens: int
    refill_period_sec: int

    def seconds_to_next_token(self) -> float:
        """How long until the bucket holds a token again (0 when it holds one now): one token's share of
        the refill period (10 tokens every 60 s: 6 s)."""
        if self.available_tokens > 0:
            return 0.0
        return self.refill_period_sec / self.refill_tokens if self.refill_tokens > 0 else float("inf")


class Violation(_Frozen):
    reason: str
    value: str | None = None
    property: str | None = None


class Problem(_Frozen):
    """An RFC 7807 problem as DICT sends it; `name` is the last part of its type (`RateLimited`)."""

    type: str
    title: str
    status: int
    detail: str | None = None
    correlation_id: str | None = None
    violations: list[Violation] = []

    @property
    def name(self) -> str:
        return self.type.rsplit("/", 1)[-1]


# --- writing ------------------------------------------------------------------------------------------


def timestamp(moment: datetime) -> str:
    """`2020-01-10T10:00:00.000Z`: UTC, milliseconds, as DICT writes times."""
    if moment.tzinfo is None:
        raise ValueError("a time sent to DICT must be aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.astimezone(UTC).microsecond // 1000:03d}Z"


def _element(parent: etree._Element, tag: str, text: str) -> None:
    etree.SubElement(parent, tag).text = text


def create_sync_verification_request(participant: str, key_type: KeyType, verifier: str) -> etree._Element:
    root = etree.Element("CreateSyncVerificationRequest")
    verification = etree.SubElement(root, "SyncVerification")
    _element(verification, "Participant", participant)
    _element(verification, "KeyType", key_type.value)
    _element(verification, "ParticipantSyncVerifier", verifier.lower())
    return root


def create_cid_set_file_request(participant: str, key_type: KeyType) -> etree._Element:
    root = etree.Element("CreateCidSetFileRequest")
    _element(root, "Participant", participant)
    _element(root, "KeyType", key_type.value)
    return root


def list_cid_set_events_query(
    participant: str, key_type: KeyType, start: datetime | None, end: datetime | None, limit: int
) -> str:
    """The query string of listCidSetEvents (`limit` 1 to 200; `start` and `end` inclusive)."""
    if not 1 <= limit <= 200:
        raise ValueError(f"DICT lists 1 to 200 events a page, not {limit}")
    params = {"Participant": participant, "KeyType": key_type.value, "Limit": str(limit)}
    if start is not None:
        params["StartTime"] = timestamp(start)
    if end is not None:
        params["EndTime"] = timestamp(end)
    return urlencode(params)


# --- reading ------------------------------------------------------------------------------------------


def _tag(element: etree._Element) -> str:
    return element.tag if isinstance(element.tag, str) else "?"


def _text(parent: etree._Element, path: str) -> str:
    found = parent.findtext(path)
    if found is None or not found.strip():
        raise MalformedResponse(f"{_tag(parent)} has no {path}")
    return found.strip()


def _optional(parent: etree._Element, path: str) -> str | None:
    found = parent.findtext(path)
    return found.strip() if found is not None and found.strip() else None


def _time(value: str, where: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedResponse(f"{where} is not a time: {value!r}") from None
    if moment.tzinfo is None:
        raise MalformedResponse(f"{where} has no time zone: {value!r}")
    return moment.astimezone(UTC)


def _int(value: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise MalformedResponse(f"{where} is not an integer: {value!r}") from None


def _hex64(value: str, where: str) -> str:
    lowered = value.lower()
    if len(lowered) != 64 or any(c not in "0123456789abcdef" for c in lowered):
        raise MalformedResponse(f"{where} is not 64 hex digits: {value!r}")
    return lowered


def _enum(kind: type[E], value: str, where: str) -> E:
    try:
        return kind(value)
    except ValueError:
        raise MalformedResponse(f"{where} has an unknown value {value!r}") from None


def _root(root: etree._Element, name: str) -> etree._Element:
    if root.tag != name:
        raise MalformedResponse(f"expected {name}, got {_tag(root)}")
    return root


def sync_verification_reply(root: etree._Element) -> SyncVerificationReply:
    verification = _root(root, "CreateSyncVerificationResponse").find("SyncVerification")
    if verification is None:
        raise MalformedResponse("CreateSyncVerificationResponse has no SyncVerification")
    result = _text(verification, "Result")
    if result not in ("OK", "NOK"):
        raise MalformedResponse(f"SyncVerification/Result has an unknown value {result!r}")
    return SyncVerificationReply(id=_int(_text(verification, "Id"), "SyncVerification/Id"), ok=result == "OK")


def cid_set_file(root: etree._Element) -> CidSetFileInfo:
    """The file of a createCidSetFile or a getCidSetFile response."""
    if root.tag not in ("CreateCidSetFileResponse", "GetCidSetFileResponse"):
        raise MalformedResponse(f"expected a CID file response, got {_tag(root)}")
    file = root.find("CidSetFile")
    if file is None:
        raise MalformedResponse(f"{_tag(root)} has no CidSetFile")
    status = _enum(FileStatus, _text(file, "Status"), "CidSetFile/Status")
    created, size, digest = _optional(file, "CreationTime"), _optional(file, "Bytes"), _optional(file, "Sha256")
    url = _optional(file, "Url")
    if status is FileStatus.AVAILABLE and None in (url, size, digest):
        raise MalformedResponse("an AVAILABLE CidSetFile lacks its Url, Bytes or Sha256")
    return CidSetFileInfo(
        id=_int(_text(file, "Id"), "CidSetFile/Id"),
        status=status,
        participant=_text(file, "Participant"),
        key_type=_enum(KeyType, _text(file, "KeyType"), "CidSetFile/KeyType"),
        request_time=_time(_text(file, "RequestTime"), "CidSetFile/RequestTime"),
        creation_time=_time(created, "CidSetFile/CreationTime") if created else None,
        url=url,
        bytes=_int(size, "CidSetFile/Bytes") if size else None,
        sha256=_hex64(digest, "CidSetFile/Sha256") if digest else None,
    )


def cid_set_events_page(root: etree._Element) -> CidSetEventsPage:
    _root(root, "ListCidSetEventsResponse")
    has_more = _text(root, "HasMoreElements")
    if has_more not in ("true", "false"):
        raise MalformedResponse(f"HasMoreElements is not a boolean: {has_more!r}")
    events = []
    for item in root.iterfind("CidSetEvents/CidSetEvent"):
        kind = _text(item, "Type")
        if kind not in CIDEventType.__members__:
            continue  # a kind of event this version does not know: compatible by the API's rules
        events.append(
            CidSetEventItem(
                type=CIDEventType(kind),
                cid=_hex64(_text(item, "Cid"), "CidSetEvent/Cid"),
                timestamp=_time(_text(item, "Timestamp"), "CidSetEvent/Timestamp"),
            )
        )
    return CidSetEventsPage(
        has_more=has_more == "true",
        participant=_text(root, "Participant"),
        key_type=_enum(KeyType, _text(root, "KeyType"), "KeyType"),
        start_time=_time(_text(root, "StartTime"), "StartTime"),
        end_time=_time(_text(root, "EndTime"), "EndTime"),
        verifier_start=_hex64(_text(root, "SyncVerifierStart"), "SyncVerifierStart"),
        verifier_end=_hex64(_text(root, "SyncVerifierEnd"), "SyncVerifierEnd"),
        events=events,
    )


def entry_by_cid(root: etree._Element) -> EntryByCid:
    """The entry and the CID it was asked by; `MalformedResponse` if the entry's CID is not that one."""
    _root(root, "GetEntryByCidResponse")
    asked = _hex64(_text(root, "Cid"), "Cid")
    entry = root.find("Entry")
    if entry is None:
        raise MalformedResponse("GetEntryByCidResponse has no Entry")
    try:
        request_id = UUID(_text(root, "RequestId"))
    except ValueError:
        raise MalformedResponse("RequestId is not a UUID") from None
    found = DictEntry(
        key_type=_enum(KeyType, _text(entry, "KeyType"), "Entry/KeyType"),
        key=_text(entry, "Key"),
        participant=_text(entry, "Account/Participant"),
        branch=_optional(entry, "Account/Branch"),
        account_number=_text(entry, "Account/AccountNumber"),
        account_type=_enum(AccountType, _text(entry, "Account/AccountType"), "Entry/Account/AccountType"),
        opening_date=_time(_text(entry, "Account/OpeningDate"), "Entry/Account/OpeningDate"),
        owner_type=_enum(OwnerType, _text(entry, "Owner/Type"), "Entry/Owner/Type"),
        owner_tax_id=_text(entry, "Owner/TaxIdNumber"),
        owner_name=_text(entry, "Owner/Name"),
        owner_trade_name=_optional(entry, "Owner/TradeName"),
        creation_date=_time(_text(entry, "CreationDate"), "Entry/CreationDate"),
        key_ownership_date=_time(_text(entry, "KeyOwnershipDate"), "Entry/KeyOwnershipDate"),
        request_id=request_id,
    )
    if cid(found) != asked:
        raise MalformedResponse("DICT's entry does not hash to the CID it was asked by")
    return EntryByCid(cid=asked, entry=found)


def policy_state(root: etree._Element) -> PolicyState:
    """The bucket of a getPolicy response."""
    policy = _root(root, "GetPolicyResponse").find("Policy")
    if policy is None:
        raise MalformedResponse("GetPolicyResponse has no Policy")
    return _policy(policy)


def policy_states(root: etree._Element) -> list[PolicyState]:
    """Every bucket of a listPolicies response."""
    return [_policy(p) for p in _root(root, "ListPoliciesResponse").iterfind("Policies/Policy")]


def _policy(policy: etree._Element) -> PolicyState:
    def number(name: str) -> int:
        return _int(_text(policy, name), f"Policy/{name}")

    return PolicyState(
        name=_text(policy, "Name"),
        available_tokens=number("AvailableTokens"),
        capacity=number("Capacity"),
        refill_tokens=number("RefillTokens"),
        refill_period_sec=number("RefillPeriodSec"),
    )


def problem(document: bytes) -> Problem | None:
    """The RFC 7807 problem in an error response, or None if the body is not one."""
    try:
        root = etree.fromstring(document, parser=PARSER)
    except etree.XMLSyntaxError:
        return None
    ns = f"{{{PROBLEM_NS}}}"
    if _tag(root) not in (f"{ns}problem", "problem"):
        return None
    prefix = ns if _tag(root).startswith("{") else ""

    def text(name: str, parent: etree._Element = root) -> str | None:
        found = parent.findtext(f"{prefix}{name}")
        return found.strip() if found is not None else None

    status = text("status") or "0"
    return Problem(
        type=text("type") or "",
        title=text("title") or "",
        status=int(status) if status.isdigit() else 0,
        detail=text("detail"),
        correlation_id=text("correlationId"),
        violations=[
            Violation(reason=text("reason", v) or "", value=text("value", v), property=text("property", v))
            for v in root.iterfind(f"{prefix}violations/{prefix}violation")
        ],
    )
