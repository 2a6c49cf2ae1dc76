"""Signed requests and checked responses, in the layout BCB's reference signer produces."""

from __future__ import annotations

import pytest
from cryptography import x509
from lxml import etree

from cidsync.dict_api.signature import (
    DS,
    KEY_INFO_ID,
    SignatureInvalid,
    SignerBundle,
    SigningIdentity,
    XmlSigner,
)
from cidsync_tooling.devstack.pki import Signer, make_signer

REQUEST = b"""<?xml version="1.0" encoding="UTF-8"?>
<CreateSyncVerificationRequest>
  <SyncVerification>
    <Participant>60701190</Participant>
    <KeyType>EMAIL</KeyType>
    <ParticipantSyncVerifier>5d9a2c7e0b6f41a3c8e2d17f09b4a6c35e8d1f2a7b0c9e4d3f6a1b8c2e5d7f90</ParticipantSyncVerifier>
  </SyncVerification>
</CreateSyncVerificationRequest>"""


@pytest.fixture(scope="module")
def dict_signer() -> Signer:
    return make_signer("DICT signing")


def signed(signer: Signer, document: bytes = REQUEST) -> bytes:
    return XmlSigner(SigningIdentity(signer.cert_pem, signer.key_pem)).sign(etree.fromstring(document))


def test_the_signature_has_the_reference_signers_layout(dict_signer: Signer) -> None:
    root = etree.fromstring(signed(dict_signer))
    first = root[0]
    assert first.tag == f"{{{DS}}}Signature"
    assert first.prefix == "ds"
    signed_info = first.find(f"{{{DS}}}SignedInfo")
    assert signed_info is not None
    assert [m.get("Algorithm") for m in signed_info.iter(f"{{{DS}}}CanonicalizationMethod")] == [
        "http://www.w3.org/2001/10/xml-exc-c14n#"
    ]
    method = signed_info.find(f"{{{DS}}}SignatureMethod")
    assert method is not None
    assert method.get("Algorithm") == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    references = signed_info.findall(f"{{{DS}}}Reference")
    assert [r.get("URI") for r in references] == [f"#{KEY_INFO_ID}", ""]
    transforms = [[t.get("Algorithm") for t in r.iter(f"{{{DS}}}Transform")] for r in references]
    assert transforms == [
        ["http://www.w3.org/2001/10/xml-exc-c14n#"],
        ["http://www.w3.org/2000/09/xmldsig#enveloped-signature", "http://www.w3.org/2001/10/xml-exc-c14n#"],
    ]
    key_info = first.find(f"{{{DS}}}KeyInfo")
    assert key_info is not None
    assert key_info.get("Id") == KEY_INFO_ID
    assert key_info.find(f"{{{DS}}}X509Data/{{{DS}}}X509Certificate") is None  # named, not sent
    assert key_info.findtext(f"{{{DS}}}X509Data/{{{DS}}}X509IssuerSerial/{{{DS}}}X509SerialNumber")
    # The issuer as the reference signer's Java writes it (getIssuerDN().toString()): ", " between RDNs.
    issuer = key_info.findtext(f"{{{DS}}}X509Data/{{{DS}}}X509IssuerSerial/{{{DS}}}X509IssuerName")
    assert issuer == "C=BR, CN=cidsync test signing CA"


def test_a_signed_document_verifies_against_the_bundle_and_comes_back_parsed(dict_signer: Signer) -> None:
    other = make_signer("another DICT key")
    bundle = SignerBundle(other.cert_pem + dict_signer.cert_pem)  # a rotation: two certificates
    root = bundle.verify(signed(dict_signer))
    assert root.findtext("SyncVerification/KeyType") == "EMAIL"


def test_an_unsigned_response_is_refused(dict_signer: Signer) -> None:
    with pytest.raises(SignatureInvalid, match="not signed"):
        SignerBundle(dict_signer.cert_pem).verify(REQUEST)


def test_a_tampered_response_is_refused(dict_signer: Signer) -> None:
    document = signed(dict_signer).replace(b"<KeyType>EMAIL</KeyType>", b"<KeyType>CPF</KeyType>")
    with pytest.raises(SignatureInvalid, match="does not verify"):
        SignerBundle(dict_signer.cert_pem).verify(document)


def test_a_response_signed_by_a_certificate_outside_the_bundle_is_refused(dict_signer: Signer) -> None:
    stranger = make_signer("not DICT")
    with pytest.raises(SignatureInvalid, match="not in the signer bundle"):
        SignerBundle(dict_signer.cert_pem).verify(signed(stranger))


def test_a_foreign_key_claiming_a_trusted_certificate_is_refused(dict_signer: Signer) -> None:
    """Someone signs with their own key but names DICT's certificate: the signature does not verify."""
    impostor = make_signer("impostor")
    document = signed(impostor)
    trusted_serial = str(x509.load_pem_x509_certificate(dict_signer.cert_pem).serial_number)
    root = etree.fromstring(document)
    issuer_serial = root.find(f".//{{{DS}}}X509IssuerSerial")
    assert issuer_serial is not None
    issuer_serial[1].text = trusted_serial
    with pytest.raises(SignatureInvalid):
        SignerBundle(dict_signer.cert_pem).verify(etree.tostring(root))


def test_a_signature_over_a_wrapped_element_does_not_pass_for_one_over_the_response(dict_signer: Signer) -> None:
    """Signature wrapping: a valid signature moved under a new root that carries other data."""
    genuine = etree.fromstring(signed(dict_signer))
    forged = etree.fromstring(b"<CreateSyncVerificationResponse><Result>OK</Result></CreateSyncVerificationResponse>")
    forged.append(genuine)  # the signed document, signature inside, as a child of the forged root
    with pytest.raises(SignatureInvalid):
        SignerBundle(dict_signer.cert_pem).verify(etree.tostring(forged))


def test_an_expired_signing_certificate_is_refused() -> None:
    expired = make_signer("DICT, last year", days=-1)
    with pytest.raises(SignatureInvalid, match="outside its validity"):
        SignerBundle(expired.cert_pem).verify(signed(expired))


def test_a_key_that_is_not_the_certificates_is_refused_when_the_signer_is_made(dict_signer: Signer) -> None:
    other = make_signer("other")
    with pytest.raises(ValueError, match="not the certificate's"):
        XmlSigner(SigningIdentity(dict_signer.cert_pem, other.key_pem))
