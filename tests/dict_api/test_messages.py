"""The XML written to and read from DICT API v2, on documents shaped as the specification's examples
(our own values): hex normalised, times in UTC, a missing element named, personal data kept out of reprs."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qs

import pytest
from lxml import etree

from cidsync.bridge.models import CIDEventType, FileStatus
from cidsync.cid import cid
from cidsync.dict_api import messages as m
from cidsync.entry import Entry, KeyType
from cidsync_tooling.synthetic import synthetic_entry

VERIFIER = "5D9A2C7E0B6F41A3C8E2D17F09B4A6C35E8D1F2A7B0C9E4D3F6A1B8C2E5D7F90"
CID_A = "7c3f0e9a1b2d4c6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f3a5b7c9d1e"
CID_B = "E1D2C3B4A5968778695A4B3C2D1E0F0A1B2C3D4E5F60718293A4B5C6D7E8F901"


def xml(text: str) -> etree._Element:
    return etree.fromstring(text.encode())


def test_a_sync_verification_request_carries_the_pair_and_the_lowercase_verifier() -> None:
    root = m.create_sync_verification_request("60701190", KeyType.PHONE, VERIFIER)
    assert etree.tostring(root) == (
        b"<CreateSyncVerificationRequest><SyncVerification><Participant>60701190</Participant>"
        b"<KeyType>PHONE</KeyType><ParticipantSyncVerifier>" + VERIFIER.lower().encode() + b"</ParticipantSyncVerifier>"
        b"</SyncVerification></CreateSyncVerificationRequest>"
    )


def test_a_cid_file_request_names_the_pair() -> None:
    root = m.create_cid_set_file_request("60701190", KeyType.EVP)
    assert [(e.tag, e.text) for e in root] == [("Participant", "60701190"), ("KeyType", "EVP")]


def test_times_go_out_in_utc_with_milliseconds() -> None:
    moment = datetime(2026, 3, 1, 9, 30, 5, 123456, tzinfo=timezone(timedelta(hours=-3)))
    assert m.timestamp(moment) == "2026-03-01T12:30:05.123Z"
    with pytest.raises(ValueError, match="aware"):
        m.timestamp(datetime(2026, 3, 1))


def test_the_events_query_has_inclusive_bounds_and_a_bounded_limit() -> None:
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    query = parse_qs(m.list_cid_set_events_query("60701190", KeyType.CPF, start, start + timedelta(hours=1), 200))
    assert query == {
        "Participant": ["60701190"],
        "KeyType": ["CPF"],
        "Limit": ["200"],
        "StartTime": ["2026-03-01T12:00:00.000Z"],
        "EndTime": ["2026-03-01T13:00:00.000Z"],
    }
    with pytest.raises(ValueError, match="1 to 200"):
        m.list_cid_set_events_query("60701190", KeyType.CPF, None, None, 201)


@pytest.mark.parametrize(("result", "ok"), [("OK", True), ("NOK", False)])
def test_a_sync_verification_reply(result: str, ok: bool) -> None:
    reply = m.sync_verification_reply(
        xml(f"""<CreateSyncVerificationResponse>
        <ResponseTime>2026-03-01T12:00:00.000Z</ResponseTime><CorrelationId>c0ffee</CorrelationId>
        <SyncVerification><Participant>60701190</Participant><KeyType>CPF</KeyType>
        <ParticipantSyncVerifier>{VERIFIER}</ParticipantSyncVerifier><Id>77</Id><Result>{result}</Result>
        </SyncVerification></CreateSyncVerificationResponse>""")
    )
    assert reply == m.SyncVerificationReply(id=77, ok=ok)


def test_a_reply_without_its_result_is_malformed_and_says_what_is_missing() -> None:
    with pytest.raises(m.MalformedResponse, match="SyncVerification has no Result"):
        m.sync_verification_reply(
            xml("""<CreateSyncVerificationResponse><SyncVerification>
            <Id>77</Id></SyncVerification></CreateSyncVerificationResponse>""")
        )
    with pytest.raises(m.MalformedResponse, match="expected CreateSyncVerificationResponse"):
        m.sync_verification_reply(xml("<GetPolicyResponse/>"))


def test_a_requested_file_and_an_available_one_with_an_uppercase_digest() -> None:
    requested = m.cid_set_file(
        xml("""<CreateCidSetFileResponse><CidSetFile><Id>9001</Id>
        <Status>REQUESTED</Status><Participant>60701190</Participant><KeyType>EMAIL</KeyType>
        <RequestTime>2026-03-01T12:00:00.000Z</RequestTime></CidSetFile></CreateCidSetFileResponse>""")
    )
    assert (requested.id, requested.status, requested.url, requested.sha256) == (
        9001,
        FileStatus.REQUESTED,
        None,
        None,
    )
    available = m.cid_set_file(
        xml(f"""<GetCidSetFileResponse><CidSetFile><Id>9001</Id>
        <Status>AVAILABLE</Status><Participant>60701190</Participant><KeyType>EMAIL</KeyType>
        <RequestTime>2026-03-01T12:00:00.000Z</RequestTime><CreationTime>2026-03-01T12:00:42.500Z</CreationTime>
        <Url>https://files.example/60701190/9001.cids</Url><Bytes>1300</Bytes><Sha256>{CID_B}</Sha256>
        </CidSetFile></GetCidSetFileResponse>""")
    )
    assert available.sha256 == CID_B.lower()
    assert (available.bytes, available.url) == (1300, "https://files.example/60701190/9001.cids")
    assert available.creation_time == datetime(2026, 3, 1, 12, 0, 42, 500000, tzinfo=UTC)


def test_an_available_file_without_its_url_is_malformed() -> None:
    with pytest.raises(m.MalformedResponse, match="lacks its Url, Bytes or Sha256"):
        m.cid_set_file(
            xml("""<GetCidSetFileResponse><CidSetFile><Id>1</Id><Status>AVAILABLE</Status>
            <Participant>60701190</Participant><KeyType>EMAIL</KeyType>
            <RequestTime>2026-03-01T12:00:00.000Z</RequestTime><Bytes>65</Bytes></CidSetFile></GetCidSetFileResponse>""")
        )


def test_an_events_page_with_uppercase_hex_and_an_event_kind_this_version_does_not_know() -> None:
    page = m.cid_set_events_page(
        xml(f"""<ListCidSetEventsResponse>
        <ResponseTime>2026-03-01T12:00:00.000Z</ResponseTime><CorrelationId>c0ffee</CorrelationId>
        <HasMoreElements>false</HasMoreElements><Participant>60701190</Participant><KeyType>EVP</KeyType>
        <StartTime>2026-03-01T11:00:00.000Z</StartTime><EndTime>2026-03-01T11:05:00.000Z</EndTime>
        <SyncVerifierStart>{VERIFIER}</SyncVerifierStart><SyncVerifierEnd>{CID_B}</SyncVerifierEnd>
        <CidSetEvents>
          <CidSetEvent><Type>ADDED</Type><Cid>{CID_B}</Cid><Timestamp>2026-03-01T11:00:00.000Z</Timestamp></CidSetEvent>
          <CidSetEvent><Type>MOVED</Type><Cid>{CID_A}</Cid><Timestamp>2026-03-01T11:01:00.000Z</Timestamp></CidSetEvent>
          <CidSetEvent><Type>REMOVED</Type><Cid>{CID_A}</Cid><Timestamp>2026-03-01T11:05:00.000Z</Timestamp></CidSetEvent>
        </CidSetEvents></ListCidSetEventsResponse>""")
    )
    assert [(e.type, e.cid) for e in page.events] == [
        (CIDEventType.ADDED, CID_B.lower()),
        (CIDEventType.REMOVED, CID_A),
    ]
    assert (page.has_more, page.verifier_start, page.verifier_end) == (False, VERIFIER.lower(), CID_B.lower())
    assert page.end_time == datetime(2026, 3, 1, 11, 5, tzinfo=UTC)


def entry_document(cid_value: str, e: Entry, *, name: str | None = None) -> str:
    branch = f"<Branch>{e.branch}</Branch>" if e.branch else ""
    trade = f"<TradeName>{e.owner_trade_name}</TradeName>" if e.owner_trade_name else ""
    return f"""<GetEntryByCidResponse><ResponseTime>2026-03-01T12:00:00.000Z</ResponseTime>
        <CorrelationId>c0ffee</CorrelationId><Cid>{cid_value.upper()}</Cid>
        <Entry><Key>{e.key}</Key><KeyType>{e.key_type.value}</KeyType>
          <Account><Participant>{e.participant}</Participant>{branch}<AccountNumber>{e.account_number}</AccountNumber>
            <AccountType>{e.account_type.value}</AccountType><OpeningDate>2019-05-02T03:00:00.000Z</OpeningDate></Account>
          <Owner><Type>{e.owner_type.value}</Type><TaxIdNumber>{e.owner_tax_id}</TaxIdNumber>
            <Name>{name or e.owner_name}</Name>{trade}</Owner>
          <CreationDate>2024-01-02T03:00:00.000Z</CreationDate><KeyOwnershipDate>2024-01-02T03:00:00.000Z</KeyOwnershipDate>
        </Entry><RequestId>{e.request_id}</RequestId></GetEntryByCidResponse>"""


def test_an_entry_by_cid_is_read_and_checked_against_its_cid() -> None:
    entry = synthetic_entry(random.Random(5), "60701190", KeyType.CNPJ)
    found = m.entry_by_cid(xml(entry_document(cid(entry), entry)))
    assert found.cid == cid(entry)
    assert (found.entry.key, found.entry.owner_tax_id, found.entry.request_id) == (
        entry.key,
        entry.owner_tax_id,
        entry.request_id,
    )
    for shown in (repr(found), str(found), repr(found.entry)):
        for personal in (entry.key, entry.owner_name, entry.owner_tax_id):
            assert personal not in shown


def test_an_entry_that_does_not_hash_to_the_cid_asked_is_refused() -> None:
    entry = synthetic_entry(random.Random(6), "60701190", KeyType.EMAIL)
    with pytest.raises(m.MalformedResponse, match="does not hash to the CID"):
        m.entry_by_cid(xml(entry_document(cid(entry), entry, name="Someone Else")))


def test_policies_and_the_time_to_the_next_token() -> None:
    one = m.policy_state(
        xml("""<GetPolicyResponse><Category>B</Category><Policy><AvailableTokens>0</AvailableTokens>
        <Capacity>100</Capacity><RefillTokens>20</RefillTokens><RefillPeriodSec>60</RefillPeriodSec>
        <Name>CIDS_EVENTS_LIST</Name></Policy></GetPolicyResponse>""")
    )
    assert one == m.PolicyState(
        name="CIDS_EVENTS_LIST", available_tokens=0, capacity=100, refill_tokens=20, refill_period_sec=60
    )
    assert one.seconds_to_next_token() == 3.0  # 20 tokens every 60 s
    listed = m.policy_states(
        xml("""<ListPoliciesResponse><Category>B</Category><Policies>
        <Policy><AvailableTokens>7</AvailableTokens><Capacity>50</Capacity><RefillTokens>10</RefillTokens>
        <RefillPeriodSec>60</RefillPeriodSec><Name>SYNC_VERIFICATIONS_WRITE</Name></Policy>
        </Policies></ListPoliciesResponse>""")
    )
    assert [(p.name, p.seconds_to_next_token()) for p in listed] == [("SYNC_VERIFICATIONS_WRITE", 0.0)]


def test_a_problem_with_violations_and_a_body_that_is_not_one() -> None:
    found = m.problem(b"""<?xml version="1.0" encoding="UTF-8"?>
        <problem xmlns="urn:ietf:rfc:7807"><type>https://dict.pi.rsfn.net.br/api/v2/error/BadRequest</type>
        <title>Bad Request</title><status>400</status><detail>Could not read the body</detail>
        <correlationId>c0ffee</correlationId>
        <violations><violation><reason>not 8 digits</reason><value>123</value><property>participant</property>
        </violation></violations></problem>""")
    assert found is not None
    assert (found.name, found.status, found.detail, found.correlation_id) == (
        "BadRequest",
        400,
        "Could not read the body",
        "c0ffee",
    )
    assert found.violations == [m.Violation(reason="not 8 digits", value="123", property="participant")]
    assert m.problem(b"<html>gateway error</html>") is None
    assert m.problem(b"not xml at all") is None
