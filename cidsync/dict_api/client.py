"""The DICT API v2 client: mutual TLS, signed requests, checked responses, DICT's problems as errors.

One pooled keep-alive HTTP/1.1 client per process (the API recommends reusing connections: an mTLS
handshake is expensive), `Accept-Encoding: gzip`, the participant's certificate for both TLS and request
signatures, DICT's signing certificates (a bundle) to check every response. Nothing a response says is
returned before its signature is checked; a response that fails the check is `ResponseRejected`, never
data.

Errors carry what a retry needs: `RateLimited.retry_after` is read from the bucket's state
(`GET /policies/{policy}`) at the time of the refusal, `Unavailable.retry_after` from `Retry-After`.
CID files are spooled to a local file (bounded memory, a resumed download continues with an HTTP range
from where the spool ends), and checked against the `Bytes` and `Sha256` DICT gave before any line is read.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import httpx
from lxml import etree
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind

from cidsync.bridge.models import FileStatus
from cidsync.config import ENVIRONMENT, Settings
from cidsync.dict_api import messages as m
from cidsync.dict_api.policies import POLICY_OF, Operation
from cidsync.dict_api.signature import SignatureInvalid, SignerBundle, SigningIdentity, XmlSigner
from cidsync.entry import KeyType
from cidsync.errors import CommandFailed, InvalidInput, Problem
from cidsync.telemetry import tracing

T = TypeVar("T")
DEFAULT_RETRY_AFTER = 60.0  # when DICT does not say (no bucket state, no Retry-After)
CHUNK = 1 << 16


class DictApiError(CommandFailed):
    """DICT refused or failed a call. `problem` is DICT's own account when it gave one."""

    def __init__(self, message: str, *, status: int = 0, problem: m.Problem | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problem = problem


class BadRequest(DictApiError):
    """400: the request is wrong; retrying it unchanged cannot help."""


class RequestSignatureRejected(BadRequest):
    """400 RequestSignatureInvalid: DICT did not accept our signature (certificate, key, or clock)."""


class Forbidden(DictApiError):
    """403: this participant may not do this (e.g. another participant's pair)."""


class NotFound(DictApiError):
    """404: no such file, or no active entry of the participant with that CID."""


class RateLimited(DictApiError):
    """429: the bucket is empty; `retry_after` seconds until its next token."""

    def __init__(self, message: str, *, retry_after: float, problem: m.Problem | None = None) -> None:
        super().__init__(message, status=429, problem=problem)
        self.retry_after = retry_after


class Unavailable(DictApiError):
    """503 (maintenance, outside the service window): try again after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float, problem: m.Problem | None = None) -> None:
        super().__init__(message, status=503, problem=problem)
        self.retry_after = retry_after


class ServerError(DictApiError):
    """500 or another status DICT does not document: worth a retry with backoff."""


class ConnectionFailed(DictApiError):
    """No answer: DICT unreachable, a TLS handshake refused (our certificate, or theirs not trusted), a timeout."""


class ResponseRejected(DictApiError):
    """DICT's answer could not be trusted or read: unsigned, tampered with, foreign-signed, or malformed."""


class FileCorrupt(DictApiError):
    """A downloaded CID file whose size or SHA-256 is not what DICT stated."""


@dataclass(frozen=True)
class DictApiConfig:
    url: str  # e.g. https://dict-h.pi.rsfn.net.br:16522/api/v2/
    client_cert: Path  # the participant's certificate (PEM): mutual TLS and request signatures
    client_key: Path
    ca: Path  # the CAs of DICT's TLS certificate
    signer_cert: Path  # DICT's signing certificates (a bundle: a rotation is a file change)
    timeout: float = 10.0
    max_connections: int = 20


DICT_SETTINGS = ("dict_url", "dict_client_cert", "dict_client_key", "dict_ca", "dict_signer_cert")


def dict_api_config(settings: Settings) -> DictApiConfig:
    """The connector's configuration from the settings (flags, then `CIDSYNC_DICT_*`): each missing
    setting and each file that cannot be read or is not what it should be named on a line of its own."""
    problems: list[Problem] = []
    values = {name: getattr(settings, name) for name in DICT_SETTINGS}
    for name, value in values.items():
        if not value:
            problems.append(Problem(ENVIRONMENT[name], f"is required (or --{name.replace('_', '-')})"))
        elif name != "dict_url":
            problems += _unreadable(name, Path(value))
    url = values["dict_url"]
    if url and not url.startswith("https://"):
        problems.append(Problem(ENVIRONMENT["dict_url"], "must be an https:// URL (DICT is mutual TLS only)"))
    if not problems:
        try:
            XmlSigner(SigningIdentity.from_files(Path(values["dict_client_cert"]), Path(values["dict_client_key"])))
        except ValueError as error:
            problems.append(Problem(ENVIRONMENT["dict_client_key"], f"does not go with the certificate: {error}"))
    if problems:
        raise InvalidInput("DICT settings", problems)
    return DictApiConfig(
        url=str(url),
        client_cert=Path(values["dict_client_cert"]),
        client_key=Path(values["dict_client_key"]),
        ca=Path(values["dict_ca"]),
        signer_cert=Path(values["dict_signer_cert"]),
    )


def _unreadable(name: str, path: Path) -> list[Problem]:
    variable = ENVIRONMENT[name]
    try:
        text = path.read_bytes()
    except OSError as error:
        return [Problem(variable, f"cannot read {path}: {error.strerror or error}")]
    expected = b"PRIVATE KEY-----" if name == "dict_client_key" else b"-----BEGIN CERTIFICATE-----"
    if expected not in text:
        kind = "a PEM private key" if name == "dict_client_key" else "PEM certificates"
        return [Problem(variable, f"{path} holds no {kind}")]
    return []


def _tls_context(config: DictApiConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(config.ca))
    context.load_cert_chain(str(config.client_cert), str(config.client_key))
    return context


TOKENS_TOLD_WITHIN = 600.0


class _Instruments:
    """The connector's metrics. Labels: the operation, the outcome (`ok` or the error's kind), the
    participant (an ISPB) and the bucket's policy name; never a key, a CID or a URL."""

    def __init__(self, provider: metrics.MeterProvider | None) -> None:
        meter = (provider or metrics.get_meter_provider()).get_meter("cidsync.dict_api")
        self.calls = meter.create_counter(
            "cidsync.dict_api.calls", unit="{call}", description="calls to DICT API v2, by operation and outcome"
        )
        self.duration = meter.create_histogram(
            "cidsync.dict_api.duration",
            unit="s",
            description="time of one call to DICT API v2 (TLS, signature and check included), by operation",
            explicit_bucket_boundaries_advisory=[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
        )
        self._tokens: dict[tuple[str, str], tuple[int, float]] = {}  # -> (tokens, when told, monotonic)
        meter.create_observable_gauge(
            "cidsync.dict_api.bucket.tokens",
            callbacks=[self._observe],
            unit="{token}",
            description="tokens left in a rate-limit bucket when DICT last told us, by participant and policy",
        )

    def tokens(self, participant: str, states: list[m.PolicyState]) -> None:
        now = time.monotonic()
        for state in states:
            self._tokens[(participant, state.name)] = (state.available_tokens, now)

    def _observe(self, _: CallbackOptions) -> list[Observation]:
        """A bucket DICT told of more than `TOKENS_TOLD_WITHIN` ago is left out: another replica calls DICT
        now, and this one's old count (since refilled) would hold an alert on it for ever."""
        since = time.monotonic() - TOKENS_TOLD_WITHIN
        return [
            Observation(v, {"participant": p, "policy": n}) for (p, n), (v, at) in self._tokens.items() if at >= since
        ]


def _outcome(error: BaseException | None) -> str:
    """`ok`, or the error's kind in snake case (`rate_limited`, `connection_failed`, ...)."""
    if error is None:
        return "ok"
    name = type(error).__name__ if isinstance(error, DictApiError) else "unexpected"
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


class DictApiClient:
    def __init__(self, config: DictApiConfig, *, meter_provider: metrics.MeterProvider | None = None) -> None:
        self.config = config
        # Every participant a call was made for: `bridge serve` watches their rate-limit buckets.
        self.participants: set[str] = set()
        self._metrics = _Instruments(meter_provider)
        self._signer = XmlSigner(SigningIdentity.from_files(config.client_cert, config.client_key))
        self._signers = SignerBundle.from_file(config.signer_cert)
        base = config.url if config.url.endswith("/") else config.url + "/"
        self._http = httpx.AsyncClient(
            base_url=base,
            verify=_tls_context(config),
            timeout=config.timeout,
            headers={"Accept-Encoding": "gzip", "Accept": "application/xml"},
            limits=httpx.Limits(max_connections=config.max_connections, keepalive_expiry=50),
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> DictApiClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # --- the operations ----------------------------------------------------------------------------

    async def verify_sync(self, participant: str, key_type: KeyType, vsync: str) -> m.SyncVerificationReply:
        body = self._signer.sign(m.create_sync_verification_request(participant, key_type, vsync))
        root = await self._call(Operation.CREATE_SYNC_VERIFICATION, "POST", "sync-verifications/", participant, body)
        return self._read(m.sync_verification_reply, root)

    async def create_cid_set_file(self, participant: str, key_type: KeyType) -> m.CidSetFileInfo:
        body = self._signer.sign(m.create_cid_set_file_request(participant, key_type))
        root = await self._call(Operation.CREATE_CID_SET_FILE, "POST", "cids/files/", participant, body)
        return self._read(m.cid_set_file, root)

    async def get_cid_set_file(self, participant: str, file_id: int) -> m.CidSetFileInfo:
        root = await self._call(Operation.GET_CID_SET_FILE, "GET", f"cids/files/{file_id}", participant)
        return self._read(m.cid_set_file, root)

    async def list_cid_set_events(
        self, participant: str, key_type: KeyType, start: datetime | None, end: datetime | None, limit: int = 200
    ) -> m.CidSetEventsPage:
        query = m.list_cid_set_events_query(participant, key_type, start, end, limit)
        root = await self._call(Operation.LIST_CID_SET_EVENTS, "GET", f"cids/events?{query}", participant)
        return self._read(m.cid_set_events_page, root)

    async def get_entry_by_cid(self, participant: str, cid: str) -> m.EntryByCid:
        root = await self._call(Operation.GET_ENTRY_BY_CID, "GET", f"cids/entries/{cid.lower()}", participant)
        return self._read(m.entry_by_cid, root)

    async def policy(self, participant: str, name: str) -> m.PolicyState:
        root = await self._call(None, "GET", f"policies/{name}", participant)
        state = self._read(m.policy_state, root)
        self._metrics.tokens(participant, [state])
        return state

    async def policies(self, participant: str) -> list[m.PolicyState]:
        root = await self._call(None, "GET", "policies/", participant)
        states = self._read(m.policy_states, root)
        self._metrics.tokens(participant, states)
        return states

    async def download(self, file: m.CidSetFileInfo, spool: Path) -> Path:
        """The AVAILABLE `file` at `spool`, complete and checked. A spool left by an interrupted download
        is continued with `Range: bytes=<its size>-`, not fetched again from the start."""
        if file.status is not FileStatus.AVAILABLE or file.url is None or file.bytes is None or not file.sha256:
            raise DictApiError(f"CID file {file.id} is {file.status.value}, not AVAILABLE")
        have = await asyncio.to_thread(_resumable_size, spool, file.bytes)
        if have < file.bytes:
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                async with self._http.stream("GET", file.url, headers=headers) as response:
                    if response.status_code not in (200, 206):
                        raise self._error(None, response.status_code, await response.aread(), dict(response.headers))
                    if have and response.status_code == 200:  # the server ignored the range: start over
                        have = 0
                    with spool.open("ab" if have else "wb") as out:
                        async for chunk in response.aiter_raw(CHUNK):
                            out.write(chunk)
            except httpx.TransportError as error:
                raise ConnectionFailed(f"downloading CID file {file.id}: {error}") from None
        elif file.bytes == 0:  # an empty set's file: nothing to fetch
            await asyncio.to_thread(spool.touch)
        size, digest = await asyncio.to_thread(size_and_digest, spool)
        if size != file.bytes or digest != file.sha256:
            await asyncio.to_thread(spool.unlink)
            raise FileCorrupt(
                f"CID file {file.id}: {size} bytes with SHA-256 {digest}, DICT stated {file.bytes} and {file.sha256}"
            )
        return spool

    # --- plumbing ----------------------------------------------------------------------------------

    @staticmethod
    def _read(parse: Callable[[etree._Element], T], root: etree._Element) -> T:
        try:
            return parse(root)
        except m.MalformedResponse as error:
            raise ResponseRejected(f"DICT's response cannot be read: {error}") from None

    async def _call(
        self, operation: Operation | None, method: str, path: str, participant: str, body: bytes | None = None
    ) -> etree._Element:
        label = operation.value if operation else ("listPolicies" if path == "policies/" else "getPolicy")
        self.participants.add(participant)
        started = time.perf_counter()
        error: BaseException | None = None
        # Ids only on the span, as everywhere: the operation, the participant (an ISPB), the HTTP method.
        attributes = {"dict.operation": label, "cidsync.participant": participant, "http.request.method": method}
        try:
            with tracing.span(f"DICT {label}", kind=SpanKind.CLIENT, attributes=attributes) as span:
                try:
                    return await self._exchange(operation, method, path, participant, body)
                except BaseException as failed:
                    if span is not None:
                        span.set_attribute("error.type", type(failed).__name__)
                    raise
        except BaseException as failed:
            error = failed
            raise
        finally:
            self._metrics.calls.add(1, {"operation": label, "outcome": _outcome(error)})
            self._metrics.duration.record(time.perf_counter() - started, {"operation": label})

    async def _exchange(
        self, operation: Operation | None, method: str, path: str, participant: str, body: bytes | None
    ) -> etree._Element:
        headers = {"PI-RequestingParticipant": participant}
        if body is not None:
            headers["Content-Type"] = "application/xml"
        try:
            response = await self._http.request(method, path, content=body, headers=headers)
        except httpx.ConnectError as error:
            raise ConnectionFailed(f"cannot reach DICT at {self.config.url}: {_why(error)}") from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as error:
            raise ConnectionFailed(
                f"DICT at {self.config.url} closed the connection without an answer (under TLS 1.3 this is how "
                f"a client certificate it does not accept shows): {_why(error)}"
            ) from None
        except httpx.TransportError as error:
            raise ConnectionFailed(f"DICT did not answer {method} {path.split('?')[0]}: {_why(error)}") from None
        if response.is_success:
            try:
                return self._signers.verify(response.content)
            except SignatureInvalid as error:
                raise ResponseRejected(f"DICT's response refused: {error}") from None
        raise await self._refusal(operation, participant, response)

    async def _refusal(self, operation: Operation | None, participant: str, response: httpx.Response) -> DictApiError:
        error = self._error(operation, response.status_code, response.content, dict(response.headers))
        if isinstance(error, RateLimited) and operation is not None:
            try:  # the bucket says when its next token comes; asking costs no token of it
                state = await self.policy(participant, POLICY_OF[operation])
                error.retry_after = max(state.seconds_to_next_token(), 1.0)
            except DictApiError:
                pass
        return error

    def _error(self, operation: Operation | None, status: int, content: bytes, headers: dict[str, str]) -> DictApiError:
        problem: m.Problem | None = None
        if b"<" in content[:200]:
            if b"Signature" in content:
                try:
                    self._signers.verify(content)
                except SignatureInvalid as invalid:
                    return ResponseRejected(f"DICT's error response refused: {invalid}", status=status)
            problem = m.problem(content)
        name = problem.name if problem else ""
        what = f"{operation.value if operation else 'DICT'}: {status} {name}".strip()
        detail = f"{what}: {problem.detail}" if problem and problem.detail else what
        if status == 429:
            return RateLimited(detail, retry_after=DEFAULT_RETRY_AFTER, problem=problem)
        if status == 503:
            return Unavailable(detail, retry_after=_retry_after(headers), problem=problem)
        kinds: dict[int, type[DictApiError]] = {400: BadRequest, 403: Forbidden, 404: NotFound}
        kind = RequestSignatureRejected if name == "RequestSignatureInvalid" else kinds.get(status, ServerError)
        return kind(detail, status=status, problem=problem)


def _retry_after(headers: dict[str, str]) -> float:
    value = headers.get("retry-after", "")
    return float(value) if value.isdigit() else DEFAULT_RETRY_AFTER


def _why(error: httpx.TransportError) -> str:
    """The root cause, e.g. the TLS alert, rather than httpx's wrapper."""
    cause: BaseException = error
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    return str(cause) or type(cause).__name__


def _resumable_size(spool: Path, expected: int) -> int:
    """The bytes a spool already holds (0 for none, or for one longer than the file: it starts over)."""
    have = spool.stat().st_size if spool.exists() else 0
    if have > expected:
        spool.unlink()
        return 0
    return have


def size_and_digest(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as spool:
        while chunk := spool.read(CHUNK):
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()


def cids_of(spool: Path) -> Iterator[str]:
    """The CIDs of a checked file, one per line, lowercased; bounded memory whatever the file's size."""
    with spool.open("r", encoding="ascii") as lines:
        for line in lines:
            value = line.strip().lower()
            if value:
                yield value
