"""XML signatures on DICT's messages: every write request signed, every response checked.

DICT requires an enveloped XMLDSig on each write request and signs each of its responses; a client must
refuse a response whose signature does not verify. The layout is the one BCB's reference signer (the
`XMLSigner` of bacen/pix-dict-quickstart) produces, so that DICT's homologation accepts it:

- a `ds:Signature` as the root's first child;
- SignedInfo canonicalised with exclusive C14N, signed with RSA-SHA256;
- two references, SHA-256 digests: `#key-info-id` (the KeyInfo, exclusive C14N) and `""` (the whole
  document, enveloped-signature transform then exclusive C14N);
- KeyInfo `Id="key-info-id"` naming the certificate by X509IssuerSerial only (the certificate itself is
  not sent; the receiver holds it), the issuer name in Java's style (`java_issuer_name`).

Signing and checking are done by xmlsec (libxmlsec1), on a template: no hand-written cryptography.
Checking also requires the structure above, so that a signature over some other element (a wrapped
document) cannot pass for a signature over the response: the reference `""` must be there and cover the
root.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

DS = "http://www.w3.org/2000/09/xmldsig#"
KEY_INFO_ID = "key-info-id"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"

# No entities, no network, no huge trees: a response is data, never instructions to the parser.
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=False)


class SignatureInvalid(Exception):
    """A response that is unsigned, tampered with, or signed by a certificate we do not trust."""


def _ds(name: str) -> str:
    return f"{{{DS}}}{name}"


@dataclass(frozen=True)
class SigningIdentity:
    """The participant's certificate and private key (PEM): what signs our requests."""

    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def from_files(cls, cert: Path, key: Path) -> SigningIdentity:
        return cls(cert.read_bytes(), key.read_bytes())


class XmlSigner:
    def __init__(self, identity: SigningIdentity) -> None:
        certificate = x509.load_pem_x509_certificate(identity.cert_pem)
        self.issuer = java_issuer_name(certificate.issuer)
        self.serial = str(certificate.serial_number)
        # Checked here, once: a key that is not the certificate's would sign requests DICT refuses, each.
        key = serialization.load_pem_private_key(identity.key_pem, password=None)
        if key.public_key().public_numbers() != certificate.public_key().public_numbers():  # type: ignore[union-attr]
            raise ValueError("the private key is not the certificate's")
        self._key = xmlsec.Key.from_memory(identity.key_pem, xmlsec.constants.KeyDataFormatPem)

    def sign(self, root: etree._Element) -> bytes:
        """`root` signed in place (its first child becomes the signature); the document's bytes."""
        signature = xmlsec.template.create(
            root, xmlsec.constants.TransformExclC14N, xmlsec.constants.TransformRsaSha256, ns="ds"
        )
        root.insert(0, signature)
        key_info_reference = xmlsec.template.add_reference(
            signature, xmlsec.constants.TransformSha256, uri=f"#{KEY_INFO_ID}"
        )
        xmlsec.template.add_transform(key_info_reference, xmlsec.constants.TransformExclC14N)
        root_reference = xmlsec.template.add_reference(signature, xmlsec.constants.TransformSha256, uri="")
        xmlsec.template.add_transform(root_reference, xmlsec.constants.TransformEnveloped)
        xmlsec.template.add_transform(root_reference, xmlsec.constants.TransformExclC14N)
        key_info = xmlsec.template.ensure_key_info(signature, id=KEY_INFO_ID)
        issuer_serial = xmlsec.template.x509_data_add_issuer_serial(xmlsec.template.add_x509_data(key_info))
        xmlsec.template.x509_issuer_serial_add_issuer_name(issuer_serial, self.issuer)
        xmlsec.template.x509_issuer_serial_add_serial_number(issuer_serial, self.serial)
        xmlsec.tree.add_ids(root, ["Id"])
        context = xmlsec.SignatureContext()
        context.key = self._key
        context.sign(signature)
        return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


class SignerBundle:
    """The certificates whose signatures we accept (DICT's signing certificates: a bundle, so that a
    rotation is a file change), found by the issuer and serial a signature names."""

    def __init__(self, bundle_pem: bytes) -> None:
        certificates = x509.load_pem_x509_certificates(bundle_pem)
        if not certificates:
            raise ValueError("the signer bundle holds no certificate")
        self._by_serial: dict[str, list[x509.Certificate]] = {}
        for certificate in certificates:
            self._by_serial.setdefault(str(certificate.serial_number), []).append(certificate)

    @classmethod
    def from_file(cls, path: Path) -> SignerBundle:
        return cls(path.read_bytes())

    def find(self, issuer: str, serial: str) -> x509.Certificate | None:
        for certificate in self._by_serial.get(serial, []):
            if _same_name(certificate.issuer, issuer):
                return certificate
        return None

    def verify(self, document: bytes, now: datetime | None = None) -> etree._Element:
        """The parsed document once its signature is checked; `SignatureInvalid` saying why otherwise."""
        try:
            root = etree.fromstring(document, parser=PARSER)
        except etree.XMLSyntaxError as error:
            raise SignatureInvalid(f"the response is not XML: {error}") from None
        signature = _the_signature(root)
        issuer, serial = _named_certificate(signature)
        certificate = self.find(issuer, serial)
        if certificate is None:
            raise SignatureInvalid(
                f"signed by a certificate not in the signer bundle (issuer {issuer}, serial {serial})"
            )
        moment = now or datetime.now(UTC)
        if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
            raise SignatureInvalid(f"signed by a certificate outside its validity (serial {serial})")
        xmlsec.tree.add_ids(root, ["Id"])
        context = xmlsec.SignatureContext()
        context.key = xmlsec.Key.from_memory(
            certificate.public_bytes(serialization.Encoding.PEM), xmlsec.constants.KeyDataFormatCertPem
        )
        try:
            context.verify(signature)
        except xmlsec.Error:
            raise SignatureInvalid(
                "the signature does not verify: the response was altered or signed by another key"
            ) from None
        return root


def _the_signature(root: etree._Element) -> etree._Element:
    """The one signature, as the root's child, in the expected structure."""
    signatures = root.findall(_ds("Signature"))
    if not signatures:
        raise SignatureInvalid("the response is not signed")
    if len(signatures) > 1 or root.findall(f".//{_ds('Signature')}") != signatures:
        raise SignatureInvalid("the response carries more than one signature, or one not under its root")
    signature = signatures[0]
    signed_info = signature.find(_ds("SignedInfo"))
    if signed_info is None:
        raise SignatureInvalid("the signature has no SignedInfo")
    method = signed_info.find(_ds("SignatureMethod"))
    if method is None or method.get("Algorithm") != RSA_SHA256:
        raise SignatureInvalid("the signature is not RSA-SHA256")
    covers_root = False
    for reference in signed_info.findall(_ds("Reference")):
        digest = reference.find(_ds("DigestMethod"))
        if digest is None or digest.get("Algorithm") != SHA256:
            raise SignatureInvalid("a reference's digest is not SHA-256")
        transforms = [t.get("Algorithm") for t in reference.iterfind(f"{_ds('Transforms')}/{_ds('Transform')}")]
        if reference.get("URI") == "" and transforms == [ENVELOPED, EXC_C14N]:
            covers_root = True
    if not covers_root:
        raise SignatureInvalid("the signature does not cover the whole response")
    return signature


def _named_certificate(signature: etree._Element) -> tuple[str, str]:
    issuer_serial = signature.find(f"{_ds('KeyInfo')}/{_ds('X509Data')}/{_ds('X509IssuerSerial')}")
    if issuer_serial is None:
        raise SignatureInvalid("the signature does not name its certificate (X509IssuerSerial)")
    issuer = issuer_serial.findtext(_ds("X509IssuerName"), default="").strip()
    serial = issuer_serial.findtext(_ds("X509SerialNumber"), default="").strip()
    if not issuer or not serial:
        raise SignatureInvalid("the signature names its certificate without issuer or serial")
    return issuer, serial


def java_issuer_name(name: x509.Name) -> str:
    """The issuer as BCB's reference signer writes it (Java's `getIssuerDN().toString()`): the RFC 4514
    order, RDNs joined by ", " (`CN=AC X, O=ICP-Brasil, C=BR`), not RFC 4514's bare ",". DICT resolves the
    certificate from this name and the serial, so we write what the signer BCB's homologation knows writes."""
    return ", ".join(rdn.rfc4514_string() for rdn in reversed(name.rdns))


def _same_name(name: x509.Name, text: str) -> bool:
    """Issuer names compared as names, not strings: `CN=a,O=b` and `CN=a, O=b` (Java's style) are one."""
    try:
        parsed = x509.Name.from_rfc4514_string(text.replace(", ", ","))
    except ValueError:
        return False
    return {(a.oid, a.value) for a in parsed} == {(a.oid, a.value) for a in name}
