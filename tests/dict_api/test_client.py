"""The DICT API v2 connector against the simulator's DICT API face, over real mutual TLS: every operation,
each failure mapped to its error with no data, rate limits with the bucket's retry time, CID files checked
and resumed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cidsync.bridge.models import FileStatus
from cidsync.cid import vsync
from cidsync.dict_api import client as c
from cidsync.dict_api.messages import CidSetFileInfo
from cidsync.entry import KeyType
from cidsync_tooling.devstack.pki import DictPki
from cidsync_tooling.simulator.dict_api_face import DictApiFace
from cidsync_tooling.simulator.server import Simulator
from tests.helpers.dict_api import PARTICIPANT, available_file, connector_config, load
from tests.helpers.eventually import eventually


async def test_verify_sync_answers_ok_for_dicts_vsync_and_nok_otherwise(
    pki: DictPki, dict_api: tuple[Simulator, DictApiFace]
) -> None:
    sim, face = dict_api
    cids = load(sim, KeyType.CPF, 30)
    async with c.DictApiClient(connector_config(pki, face)) as dict_:
        assert (await dict_.verify_sync(PARTICIPANT, KeyType.CPF, vsync(cids).upper())).ok
        assert not (await dict_.verify_sync(PARTICIPANT, KeyType.CPF, vsync(cids[1:]))).ok


async def test_a_cid_file_is_requested_polled_downloaded_and_checked(
    pki: DictPki, dict_api: tuple[Simulator, DictApiFace], tmp_path: Path
) -> None:
    sim, face = dict_api
    cids = load(sim, KeyType.EVP, 500)
    async with c.DictApiClient(connector_config(pki, face)) as dict_:
        requested = await dict_.create_cid_set_file(PARTICIPANT, KeyType.EVP)
        assert requested.status is FileStatus.REQUESTED

        async def status() -> CidSetFileInfo:
            return await dict_.get_cid_set_file(PARTICIPANT, requested.id)

        available = await eventually(
            status, lambda f: f.status is FileStatus.AVAILABLE, "the file AVAILABLE", timeout=10, every=0.1
        )
        spool = await dict_.download(available, tmp_path / "file.cids")
    assert sorted(c.cids_of(spool)) == sorted(cids)


async def test_a_resumed_download_continues_from_where_the_spool_ends(
    pki: DictPki, dict_api: tuple[Simulator, DictApiFace], tmp_path: Path
) -> None:
    sim, face = dict_api
    file = available_file(sim, KeyType.EMAIL, 300)
    async with c.DictApiClient(connector_config(pki, face)) as dict_:
        info = await dict_.get_cid_set_file(PARTICIPANT, face._number(file))
        spool = tmp_path / "file.cids"
        whole = "".join(f"{value}\n" for value in file.cids).encode()
        spool.write_bytes(whole[: len(whole) // 2 + 7])  # a download cut in the middle of a line
        await dict_.download(info, spool)
    assert face.range_requests == 1
    assert spool.read_bytes() == whole


async def test_a_file_whose_sha256_does_not_match_is_refused_and_dropped(
    pki: DictPki, dict_api: tuple[Simulator, DictApiFace], tmp_path: Path
) -> None:
    sim, face = dict_api
    file = available_file(sim, KeyType.PHONE, 50)
    face.corrupt_files = True
    async with c.DictApiClient(connector_config(pki, face)) as dict_:
        info = await dict_.get_cid_set_file(PARTICIPANT, face._number(file))
        with pytest.raises(c.FileCorrupt, match="SHA-256"):
            await dict_.download(info, tmp_path / "file.cids")
    assert not (tmp_path / "file.cids").exists()


async def test_the_event_log_and_the_entry_behind_a_cid(pki: DictPki, dict_api: tuple[Simulator, DictApiFace]) -> None:
    sim, face = dict_api
    before = datetime.now(UTC) - timedelta(seconds=1)
    cids = load(sim, KeyType.CNPJ, 12)
    async with c.DictApiClient(connector_config(pki, face)) as dict_:
        page = await dict_.list_cid_set_events(PARTICIPANT, KeyType.CNPJ, before, None, limit=200)
        assert sorted(e.cid for e in page.events) == sorted(cids)
        assert (page.has_more, page.verifier_end) == (False, vsync(cids))
        found = await dict_.get_entry_by_cid(PARTICIPANT, cids[0].upper())
        assert (found.cid, found.entry.participant) == (cids[0], PARTICIPANT)
        with pytest.raises(c.NotFound, match="getEntryByCid: 404 NotFound"):
            await dict_.get_entry_by_cid(PARTICIPANT, "0" * 64)


async def test_rate_limited_with_the_retry_time_of_the_bucket(
    pki: DictPki, dict_api: tuple[Simulator, DictApiFace]
) -> None:
    _sim, face = dict_api
    async with c.DictApiClient(connector_config(pki, face)) as dict_:
        for _ in range(50):  # SYNC_VERIFICATIONS_WRITE: a bucket of 50
            await dict_.verify_sync(PARTICIPANT, KeyType.EVP, "0" * 64)
        with pytest.raises(c.RateLimited) as limited:
            await dict_.verify_sync(PARTICIPANT, KeyType.EVP, "0" * 64)
        assert limited.value.retry_after == pytest.approx(6.0)  # 10 tokens a minute
        assert limited.value.problem is not None
        assert limited.value.problem.name == "RateLimited"
        states = {p.name: p for p in await dict_.policies(PARTICIPANT)}
        assert states["SYNC_VERIFICATIONS_WRITE"].available_tokens == 0
        assert states["CIDS_FILES_WRITE"].capacity == 200


async def test_unavailable_carries_retry_after_and_forbidden_is_its_own_error(
    pki: DictPki, dict_api: tuple[Simulator, DictApiFace]
) -> None:
    sim, face = dict_api
    sim.faults.fail_next["VerifySync"] = 1
    async with c.DictApiClient(connector_config(pki, face)) as dict_:
        with pytest.raises(c.Unavailable) as unavailable:
            await dict_.verify_sync(PARTICIPANT, KeyType.EVP, "0" * 64)
        assert unavailable.value.retry_after == 1.0
        sim.participants = frozenset({"11111111"})
        with pytest.raises(c.Forbidden, match="403 Forbidden"):
            await dict_.verify_sync(PARTICIPANT, KeyType.EVP, "0" * 64)


async def test_a_tampered_response_is_refused_with_no_data(
    pki: DictPki, dict_api: tuple[Simulator, DictApiFace]
) -> None:
    _, face = dict_api
    face.tamper_next = 1
    async with c.DictApiClient(connector_config(pki, face)) as dict_:
        with pytest.raises(c.ResponseRejected, match="does not verify"):
            await dict_.verify_sync(PARTICIPANT, KeyType.EVP, "0" * 64)


async def test_a_response_signed_by_a_key_we_do_not_trust_is_refused(
    pki: DictPki, dict_api: tuple[Simulator, DictApiFace]
) -> None:
    _, face = dict_api
    async with c.DictApiClient(connector_config(pki, face, signer_cert=pki.participant_cert)) as dict_:
        with pytest.raises(c.ResponseRejected, match="not in the signer bundle"):
            await dict_.verify_sync(PARTICIPANT, KeyType.EVP, "0" * 64)


async def test_an_unknown_client_certificate_gets_no_handshake(
    pki: DictPki, dict_api: tuple[Simulator, DictApiFace]
) -> None:
    _, face = dict_api
    stranger = connector_config(pki, face, client_cert=pki.stranger_cert, client_key=pki.stranger_key)
    async with c.DictApiClient(stranger) as dict_:
        with pytest.raises(c.ConnectionFailed):
            await dict_.verify_sync(PARTICIPANT, KeyType.EVP, "0" * 64)


async def test_a_request_signed_by_a_certificate_dict_does_not_know_is_refused(
    pki: DictPki, dict_api: tuple[Simulator, DictApiFace]
) -> None:
    """Mutual TLS passes (the certificate is the CA's), but the signing certificate is not the one DICT holds."""
    _, face = dict_api
    signer_as_client = connector_config(pki, face, client_cert=pki.dict_signer_cert, client_key=pki.dict_signer_key)
    async with c.DictApiClient(signer_as_client) as dict_:
        with pytest.raises(c.RequestSignatureRejected, match="RequestSignatureInvalid"):
            await dict_.verify_sync(PARTICIPANT, KeyType.EVP, "0" * 64)


async def test_connections_are_kept_alive_between_calls(pki: DictPki, dict_api: tuple[Simulator, DictApiFace]) -> None:
    sim, face = dict_api
    async with c.DictApiClient(connector_config(pki, face)) as dict_:
        await asyncio.gather(*(dict_.verify_sync(PARTICIPANT, KeyType.EVP, "0" * 64) for _ in range(5)))
        pool = dict_._http._transport._pool  # type: ignore[attr-defined]
        assert 1 <= len(pool.connections) <= 5
    assert sim.calls["VerifySync"] == 5


async def test_calls_outcomes_latency_and_bucket_tokens_are_measured(
    pki: DictPki, dict_api: tuple[Simulator, DictApiFace]
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    _, face = dict_api
    reader = InMemoryMetricReader()
    async with c.DictApiClient(
        connector_config(pki, face), meter_provider=MeterProvider(metric_readers=[reader])
    ) as dict_:
        await dict_.verify_sync(PARTICIPANT, KeyType.EVP, "0" * 64)
        with pytest.raises(c.NotFound):
            await dict_.get_entry_by_cid(PARTICIPANT, "1" * 64)
        await dict_.policies(PARTICIPANT)
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    calls = {(p.attributes["operation"], p.attributes["outcome"]): p.value for p in points["cidsync.dict_api.calls"]}
    assert calls == {("createSyncVerification", "ok"): 1, ("getEntryByCid", "not_found"): 1, ("listPolicies", "ok"): 1}
    assert sum(p.count for p in points["cidsync.dict_api.duration"]) == 3
    tokens = {p.attributes["policy"]: p.value for p in points["cidsync.dict_api.bucket.tokens"]}
    assert tokens["SYNC_VERIFICATIONS_WRITE"] == 49  # one verification spent
    assert all(p.attributes["participant"] == PARTICIPANT for p in points["cidsync.dict_api.bucket.tokens"])
