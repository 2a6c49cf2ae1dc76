"""The simulator's second face: DICT API v2 over HTTPS, on the same state as its gRPC face.

What a connector meets at BCB, for the operations cidsync uses: mutual TLS (a client certificate signed by
the configured client CA, or no handshake), XML bodies, write requests whose XMLDSig must verify against
the participants' signing certificates (else `RequestSignatureInvalid`), every response signed with the
simulator's own key, DICT's problem types (`application/problem+xml`), the rate-limit buckets with their
state under `/policies/`, `Retry-After` on a 503, and CID files downloaded from the `Url` DICT gives,
with HTTP ranges. The faults set through the admin service (unavailability, latency, failed files) apply
to this face too.

HTTP/1.1 with keep-alive over asyncio streams, parsed by h11 (the HTTP library under httpx).
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import h11
from lxml import etree

from cidsync.bridge.models import CIDEventType, FileStatus
from cidsync.cid import is_cid
from cidsync.dict_api import messages as m
from cidsync.dict_api.policies import METHOD_OF, OPERATION_OF_POLICY, POLICY_OF, Operation
from cidsync.dict_api.signature import PARSER, SignatureInvalid, SignerBundle, SigningIdentity, XmlSigner
from cidsync.entry import KeyType
from cidsync_tooling.simulator.dict_state import SimFile, SimulatedDict
from cidsync_tooling.simulator.server import Simulator

logger = logging.getLogger(__name__)

API = "/api/v2"
MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/xml"
    headers: tuple[tuple[str, str], ...] = ()


class Refused(Exception):
    """A DICT problem to answer with."""

    def __init__(self, status: int, name: str, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status, self.name, self.detail, self.retry_after = status, name, detail, retry_after


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class DictApiFace:
    sim: Simulator
    signer: XmlSigner
    client_signers: SignerBundle | None  # None: request signatures are not checked
    base_url: str = ""  # where file URLs point (set once the port is known)
    # Faults of this face alone, for the connector's tests: the next N signed responses altered after
    # signing (a tampered response), and files served with a changed byte (a file whose SHA-256 fails).
    tamper_next: int = 0
    corrupt_files: bool = False
    range_requests: int = 0
    _file_numbers: dict[int, str] = field(default_factory=dict)
    _numbers: dict[str, int] = field(default_factory=dict)

    # --- HTTP --------------------------------------------------------------------------------------

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
        try:
            while True:
                request = await self._read(connection, reader)
                if request is None:
                    return
                reply = await self._answer(request)
                self._write(connection, writer, request, reply)
                await writer.drain()
                if connection.our_state is h11.MUST_CLOSE:
                    return
                connection.start_next_cycle()
        except (ConnectionError, h11.RemoteProtocolError, ssl.SSLError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    @staticmethod
    async def _read(connection: h11.Connection, reader: asyncio.StreamReader) -> Request | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65_536)
                connection.receive_data(data)
                if not data and connection.their_state is not h11.DONE:
                    return None
                continue
            if isinstance(event, h11.ConnectionClosed):
                return None
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise h11.RemoteProtocolError("body too large")
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                target = urlsplit(head.target.decode())
                headers = {name.decode().lower(): value.decode() for name, value in head.headers}
                return Request(head.method.decode(), target.path, parse_qs(target.query), headers, bytes(body))

    @staticmethod
    def _write(connection: h11.Connection, writer: asyncio.StreamWriter, request: Request, reply: Reply) -> None:
        body = reply.body
        headers = [("content-type", reply.content_type), *reply.headers]
        if body and "gzip" in request.headers.get("accept-encoding", "") and reply.content_type.endswith("xml"):
            body = gzip.compress(body)
            headers.append(("content-encoding", "gzip"))
        headers += [("content-length", str(len(body))), ("keep-alive", "timeout=60")]
        writer.write(connection.send(h11.Response(status_code=reply.status, headers=headers)))
        writer.write(connection.send(h11.Data(data=body)))
        writer.write(connection.send(h11.EndOfMessage()))

    # --- routing -----------------------------------------------------------------------------------

    async def _answer(self, request: Request) -> Reply:
        try:
            handler, operation, argument = self._route(request)
            if operation is not None:
                await self._enter(operation)
            return await handler(request, argument)
        except Refused as refused:
            return self._problem(refused)
        except Exception:  # the simulator must answer as DICT would: a 500, not a dropped connection
            logger.exception("DICT API face: %s %s failed", request.method, request.path)
            return self._problem(Refused(500, "InternalServerError", "unexpected condition"))

    def _route(self, request: Request) -> tuple[Callable[[Request, str], Awaitable[Reply]], Operation | None, str]:
        routes: list[tuple[str, str, Callable[[Request, str], Awaitable[Reply]], Operation | None]] = [
            ("POST", r"/sync-verifications/?", self._sync_verification, Operation.CREATE_SYNC_VERIFICATION),
            ("POST", r"/cids/files/?", self._create_file, Operation.CREATE_CID_SET_FILE),
            ("GET", r"/cids/files/(\d+)", self._get_file, Operation.GET_CID_SET_FILE),
            ("GET", r"/cids/events", self._list_events, Operation.LIST_CID_SET_EVENTS),
            ("GET", r"/cids/entries/([0-9a-fA-F]{64})", self._entry_by_cid, Operation.GET_ENTRY_BY_CID),
            ("GET", r"/policies/?", self._policies, None),
            ("GET", r"/policies/([A-Z_]+)", self._policy, None),
        ]
        if request.path.startswith("/files/") and request.method == "GET":
            return self._download, None, request.path.removeprefix("/files/")
        for method, pattern, handler, operation in routes:
            matched = re.fullmatch(API + pattern, request.path)
            if matched and request.method == method:
                return handler, operation, matched.group(1) if matched.groups() else ""
        raise Refused(404, "NotFound", f"no such resource: {request.method} {request.path}")

    async def _enter(self, operation: Operation) -> None:
        """Counters, injected latency and unavailability: the simulator's, as on the gRPC face."""
        if await self.sim.unavailable_now(METHOD_OF[operation]):
            raise Refused(503, "ServiceUnavailable", "injected fault: DICT unavailable", retry_after=1)

    def _admit(self, operation: Operation, participant: str) -> None:
        if not self.sim.allowed(participant):
            raise Refused(403, "Forbidden", f"not allowed to act for participant {participant}")
        if self.sim.limited(participant, METHOD_OF[operation]) is not None:
            raise Refused(429, "RateLimited", f"{POLICY_OF[operation]}: no token left")

    # --- bodies ------------------------------------------------------------------------------------

    def _signed(self, root: etree._Element, status: int = 200) -> Reply:
        etree.SubElement(root, "ResponseTime").text = m.timestamp(datetime.now(UTC))
        etree.SubElement(root, "CorrelationId").text = uuid.uuid4().hex
        # ResponseTime and CorrelationId come first in DICT's responses, after the signature.
        for name in ("CorrelationId", "ResponseTime"):
            element = root.find(name)
            assert element is not None
            root.remove(element)
            root.insert(0, element)
        signed = self.signer.sign(root)
        if self.tamper_next > 0:
            self.tamper_next -= 1
            signed = signed.replace(b"<Result>NOK</Result>", b"<Result>OK</Result>")
            signed = signed.replace(b"</ResponseTime>", b"</ResponseTime><Note>altered</Note>", 1)
        return Reply(status, signed)

    def _problem(self, refused: Refused) -> Reply:
        root = etree.Element(f"{{{m.PROBLEM_NS}}}problem", nsmap={None: m.PROBLEM_NS})
        for name, value in (
            ("type", m.ERROR_TYPE_PREFIX + refused.name),
            ("title", refused.name),
            ("status", str(refused.status)),
            ("detail", refused.detail),
        ):
            etree.SubElement(root, f"{{{m.PROBLEM_NS}}}{name}").text = value
        headers = (("retry-after", str(refused.retry_after)),) if refused.retry_after is not None else ()
        return Reply(refused.status, self.signer.sign(root), "application/problem+xml", headers)

    def _body(self, request: Request, name: str) -> etree._Element:
        """A write request's document, its signature checked against the participants' certificates."""
        if self.client_signers is not None:
            try:
                root = self.client_signers.verify(request.body)
            except SignatureInvalid as error:
                raise Refused(400, "RequestSignatureInvalid", str(error)) from None
        else:
            try:
                root = etree.fromstring(request.body, parser=PARSER)
            except etree.XMLSyntaxError:
                raise Refused(400, "BadRequest", "could not parse the request body") from None
        if root.tag != name:
            raise Refused(400, "BadRequest", f"expected {name}")
        return root

    @staticmethod
    def _field(parent: etree._Element | None, name: str) -> str:
        value = parent.findtext(name) if parent is not None else None
        if not value:
            raise Refused(400, "BadRequest", f"{name} is required")
        return value.strip()

    @staticmethod
    def _key_type(value: str) -> KeyType:
        try:
            return KeyType(value)
        except ValueError:
            raise Refused(400, "BadRequest", f"unknown KeyType {value}") from None

    def _requesting(self, request: Request) -> str:
        participant = request.headers.get("pi-requestingparticipant", "")
        if not re.fullmatch(r"\d{8}", participant):
            raise Refused(400, "BadRequest", "the PI-RequestingParticipant header is required (8 digits)")
        return participant

    # --- operations --------------------------------------------------------------------------------

    async def _sync_verification(self, request: Request, _: str) -> Reply:
        body = self._body(request, "CreateSyncVerificationRequest").find("SyncVerification")
        participant = self._field(body, "Participant")
        key_type = self._key_type(self._field(body, "KeyType"))
        verifier = self._field(body, "ParticipantSyncVerifier").lower()
        if not is_cid(verifier):
            raise Refused(400, "BadRequest", "ParticipantSyncVerifier must be 64 hex digits")
        self._admit(Operation.CREATE_SYNC_VERIFICATION, participant)
        ok = self.sim.dict.vsync((participant, key_type)) == verifier
        root = etree.Element("CreateSyncVerificationResponse")
        verification = etree.SubElement(root, "SyncVerification")
        for name, value in (
            ("Participant", participant),
            ("KeyType", key_type.value),
            ("ParticipantSyncVerifier", verifier),
            ("Id", str(self.sim.calls["VerifySync"])),
            ("Result", "OK" if ok else "NOK"),
        ):
            etree.SubElement(verification, name).text = value
        return self._signed(root, 201)

    def _number(self, file: SimFile) -> int:
        if file.file_id not in self._numbers:
            number = len(self._numbers) + 1
            self._numbers[file.file_id], self._file_numbers[number] = number, file.file_id
        return self._numbers[file.file_id]

    def _file_element(self, root: etree._Element, file: SimFile) -> None:
        element = etree.SubElement(root, "CidSetFile")
        fields = [
            ("Id", str(self._number(file))),
            ("Status", file.status.value),
            ("Participant", file.participant),
            ("KeyType", file.key_type.value),
            ("RequestTime", m.timestamp(file.requested_at)),
        ]
        if file.status is FileStatus.AVAILABLE:
            assert file.available_at is not None
            fields += [
                ("CreationTime", m.timestamp(file.created_at or file.available_at)),
                ("Url", f"{self.base_url}/files/{file.file_id}"),
                ("Bytes", str(file.byte_size)),
                ("Sha256", file.sha256),
            ]
        for name, value in fields:
            etree.SubElement(element, name).text = value

    async def _create_file(self, request: Request, _: str) -> Reply:
        body = self._body(request, "CreateCidSetFileRequest")
        participant = self._field(body, "Participant")
        key_type = self._key_type(self._field(body, "KeyType"))
        self._admit(Operation.CREATE_CID_SET_FILE, participant)
        file = self.sim.dict.new_file(participant, key_type, SimulatedDict.now())
        self.sim.generate(file, self.sim.faults.file_outcome)
        root = etree.Element("CreateCidSetFileResponse")
        self._file_element(root, file)
        return self._signed(root, 201)

    async def _get_file(self, request: Request, number: str) -> Reply:
        participant = self._requesting(request)
        file_id = self._file_numbers.get(int(number))
        file = self.sim.dict.files.get(file_id) if file_id else None
        if file is None or file.participant != participant:
            raise Refused(404, "NotFound", f"no CID file {number} of participant {participant}")
        self._admit(Operation.GET_CID_SET_FILE, participant)
        root = etree.Element("GetCidSetFileResponse")
        self._file_element(root, file)
        return self._signed(root)

    async def _download(self, request: Request, file_id: str) -> Reply:
        """The file's lines, one CID and `\\n` each; `Range: bytes=N-` resumes from byte N."""
        file = self.sim.dict.files.get(file_id)
        if file is None or file.status is not FileStatus.AVAILABLE:
            return Reply(404, b"", "text/plain")
        content = "".join(f"{value}\n" for value in file.cids).encode()
        if self.corrupt_files and content:
            content = content[:-2] + (b"0" if content[-2:-1] != b"0" else b"1") + b"\n"
        if self.sim.faults.page_delay_ms:
            await asyncio.sleep(self.sim.faults.page_delay_ms / 1000)
        ranged = re.fullmatch(r"bytes=(\d+)-", request.headers.get("range", ""))
        if ranged is None:
            return Reply(200, content, "application/octet-stream", (("accept-ranges", "bytes"),))
        self.range_requests += 1
        start = int(ranged.group(1))
        if start >= len(content):
            return Reply(416, b"", "text/plain", (("content-range", f"bytes */{len(content)}"),))
        span = f"bytes {start}-{len(content) - 1}/{len(content)}"
        return Reply(206, content[start:], "application/octet-stream", (("content-range", span),))

    async def _list_events(self, request: Request, _: str) -> Reply:
        def one(name: str, required: bool = True) -> str | None:
            values = request.query.get(name)
            if not values and required:
                raise Refused(400, "BadRequest", f"the query parameter {name} is required")
            return values[0] if values else None

        participant = one("Participant") or ""
        key_type = self._key_type(one("KeyType") or "")
        limit = int(one("Limit", required=False) or "100")
        if not 1 <= limit <= 200:
            raise Refused(400, "BadRequest", "Limit must be 1 to 200")
        now = SimulatedDict.now()
        try:
            start_text, end_text = one("StartTime", required=False), one("EndTime", required=False)
            start = (
                datetime.fromisoformat(start_text.replace("Z", "+00:00"))
                if start_text
                else SimulatedDict.now().replace(year=1970)
            )
            end = datetime.fromisoformat(end_text.replace("Z", "+00:00")) if end_text else now
        except ValueError:
            raise Refused(400, "BadRequest", "StartTime and EndTime must be date-times") from None
        self._admit(Operation.LIST_CID_SET_EVENTS, participant)
        page = self.sim.dict.events((participant, key_type), start, end, limit)
        root = etree.Element("ListCidSetEventsResponse")
        first = page.events[0][0] if page.events else start
        last = page.events[-1][0] if page.events else end
        for name, value in (
            ("HasMoreElements", "true" if page.has_more else "false"),
            ("Participant", participant),
            ("KeyType", key_type.value),
            ("StartTime", m.timestamp(first)),
            ("EndTime", m.timestamp(last)),
            ("SyncVerifierStart", page.verifier_start),
            ("SyncVerifierEnd", page.verifier_end),
        ):
            etree.SubElement(root, name).text = value
        events = etree.SubElement(root, "CidSetEvents")
        for moment, kind, value in page.events:
            event = etree.SubElement(events, "CidSetEvent")
            etree.SubElement(event, "Type").text = "ADDED" if kind is CIDEventType.ADDED else "REMOVED"
            etree.SubElement(event, "Cid").text = value
            etree.SubElement(event, "Timestamp").text = m.timestamp(moment)
        return self._signed(root)

    async def _entry_by_cid(self, request: Request, value: str) -> Reply:
        participant = self._requesting(request)
        self._admit(Operation.GET_ENTRY_BY_CID, participant)
        entry = self.sim.dict.find(participant, value.lower())
        if entry is None:
            raise Refused(404, "NotFound", "no active entry of this participant has that CID")
        root = etree.Element("GetEntryByCidResponse")
        etree.SubElement(root, "Cid").text = value.lower()
        element = etree.SubElement(root, "Entry")
        etree.SubElement(element, "Key").text = entry.key
        etree.SubElement(element, "KeyType").text = entry.key_type.value
        account = etree.SubElement(element, "Account")
        etree.SubElement(account, "Participant").text = entry.participant
        if entry.branch:
            etree.SubElement(account, "Branch").text = entry.branch
        etree.SubElement(account, "AccountNumber").text = entry.account_number
        etree.SubElement(account, "AccountType").text = entry.account_type.value
        etree.SubElement(account, "OpeningDate").text = m.timestamp(entry.account_opened_at)
        owner = etree.SubElement(element, "Owner")
        etree.SubElement(owner, "Type").text = entry.owner_type.value
        etree.SubElement(owner, "TaxIdNumber").text = entry.owner_tax_id
        etree.SubElement(owner, "Name").text = entry.owner_name
        if entry.owner_trade_name:
            etree.SubElement(owner, "TradeName").text = entry.owner_trade_name
        etree.SubElement(element, "CreationDate").text = m.timestamp(entry.account_opened_at)
        etree.SubElement(element, "KeyOwnershipDate").text = m.timestamp(entry.account_opened_at)
        etree.SubElement(root, "RequestId").text = str(entry.request_id)
        return self._signed(root)

    def _policy_element(self, parent: etree._Element, participant: str, name: str) -> None:
        bucket = self.sim.bucket(participant, METHOD_OF[OPERATION_OF_POLICY[name]])
        policy = etree.SubElement(parent, "Policy")
        for field_name, value in (
            ("AvailableTokens", bucket.available_tokens),
            ("Capacity", bucket.capacity),
            ("RefillTokens", bucket.refill_tokens),
            ("RefillPeriodSec", bucket.refill_period_seconds),
        ):
            etree.SubElement(policy, field_name).text = str(value)
        etree.SubElement(policy, "Name").text = name

    async def _policies(self, request: Request, _: str) -> Reply:
        participant = self._requesting(request)
        root = etree.Element("ListPoliciesResponse")
        etree.SubElement(root, "Category").text = "A"
        policies = etree.SubElement(root, "Policies")
        for name in OPERATION_OF_POLICY:
            self._policy_element(policies, participant, name)
        return self._signed(root)

    async def _policy(self, request: Request, name: str) -> Reply:
        participant = self._requesting(request)
        if name not in OPERATION_OF_POLICY:
            raise Refused(404, "NotFound", f"no policy {name}")
        root = etree.Element("GetPolicyResponse")
        etree.SubElement(root, "Category").text = "A"
        self._policy_element(root, participant, name)
        return self._signed(root)


@dataclass(frozen=True)
class DictApiTls:
    """The face's server certificate and key, and the CA its clients' certificates must chain to."""

    cert_file: str
    key_file: str
    client_ca_file: str


def server_context(tls: DictApiTls) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    context.load_verify_locations(tls.client_ca_file)
    context.verify_mode = ssl.CERT_REQUIRED  # no client certificate, or one of another CA: no handshake
    return context


async def start_dict_api(
    sim: Simulator,
    identity: SigningIdentity,
    tls: DictApiTls,
    *,
    client_signers: SignerBundle | None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> tuple[asyncio.Server, DictApiFace]:
    """Serve DICT API v2 for `sim`; the server, and the face (its URL in `base_url`)."""
    face = DictApiFace(sim, XmlSigner(identity), client_signers)
    server = await asyncio.start_server(face.serve, host, port, ssl=server_context(tls))
    bound = server.sockets[0].getsockname()[1]
    face.base_url = f"https://{host}:{bound}"
    return server, face
