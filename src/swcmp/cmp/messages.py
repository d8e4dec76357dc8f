"""Frozen dataclasses that cross layers: parsed CMP messages and their parts.

No pyasn1 object ever leaves swcmp.cmp; everything above it sees these.
Certificates are carried as the exact DER bytes received, so that signatures
over them can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from swcmp.cmp.errors import PKI_STATUS, failure_names

# PKIStatus values
ACCEPTED = 0
GRANTED_WITH_MODS = 1
REJECTION = 2
WAITING = 3


@dataclass(frozen=True)
class AlgorithmId:
    """An AlgorithmIdentifier: dotted OID and the DER of its parameters (None when absent)."""

    oid: str
    params_der: bytes | None = None


@dataclass(frozen=True)
class StatusInfo:
    """PKIStatusInfo: status, failInfo bit numbers and the free text."""

    status: int
    fail_info: frozenset[int] = frozenset()
    text: tuple[str, ...] = ()

    @property
    def status_name(self) -> str:
        return PKI_STATUS.get(self.status, f"status{self.status}")

    @property
    def fail_names(self) -> tuple[str, ...]:
        return failure_names(self.fail_info)

    @property
    def granted(self) -> bool:
        return self.status in (ACCEPTED, GRANTED_WITH_MODS)


@dataclass(frozen=True)
class Header:
    """PKIHeader, decoded. Names are DER-encoded Name values (None for other GeneralNames)."""

    pvno: int
    sender_der: bytes | None
    recipient_der: bytes | None
    transaction_id: bytes | None
    sender_nonce: bytes | None
    recip_nonce: bytes | None
    message_time: datetime | None = None
    protection_alg: AlgorithmId | None = None
    sender_kid: bytes | None = None
    recip_kid: bytes | None = None
    free_text: tuple[str, ...] = ()
    implicit_confirm: bool = False
    confirm_wait_time: datetime | None = None
    general_info_oids: tuple[str, ...] = ()


@dataclass(frozen=True)
class OldCertId:
    """CertId: the issuer Name (DER) and serial of a certificate being updated or revoked."""

    issuer_der: bytes
    serial: int


@dataclass(frozen=True)
class CertRequestInfo:
    """One CertReqMsg as a CA sees it.

    ``request_der`` is the exact CertRequest bytes the POP signature covers.
    ``public_key_der`` is the template's SubjectPublicKeyInfo re-encoded as a
    plain SEQUENCE. ``extensions_der`` is the template's Extensions (a
    SEQUENCE OF Extension) as DER, for the CA to read SANs from.
    """

    cert_req_id: int
    request_der: bytes
    subject_der: bytes | None
    public_key_der: bytes | None
    extensions_der: bytes | None
    old_cert_id: OldCertId | None
    popo_kind: str  # "signature", "raVerified", "none" or another alternative's name
    popo_alg: AlgorithmId | None
    popo_signature: bytes | None
    popo_has_input: bool = False


@dataclass(frozen=True)
class CertResponse:
    """One CertResponse: status and, when granted, the certificate's DER."""

    cert_req_id: int
    status: StatusInfo
    cert_der: bytes | None


@dataclass(frozen=True)
class CertRepContent:
    """ip, cp or kup content."""

    responses: tuple[CertResponse, ...]
    ca_pubs: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class CertStatusInfo:
    """One CertStatus of a certConf."""

    cert_hash: bytes
    cert_req_id: int
    status: StatusInfo | None
    hash_alg: AlgorithmId | None


@dataclass(frozen=True)
class PollRepEntry:
    """One pollRep entry: come back after ``check_after`` seconds."""

    cert_req_id: int
    check_after: int
    reason: tuple[str, ...] = ()


@dataclass(frozen=True)
class InfoValue:
    """InfoTypeAndValue: OID and the DER of the value (None when absent)."""

    oid: str
    value_der: bytes | None


@dataclass(frozen=True)
class RevDetailsInfo:
    """One RevDetails of an rr."""

    issuer_der: bytes | None
    serial: int | None
    reason: int | None


@dataclass(frozen=True)
class RevRepInfo:
    """rp content: one status per revoked certificate."""

    statuses: tuple[StatusInfo, ...]


@dataclass(frozen=True)
class ErrorInfo:
    """error content."""

    status: StatusInfo
    error_code: int | None
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class RootCaKeyUpdate:
    """RootCaKeyUpdateContent: the new root and its cross certificates, as DER."""

    new_with_new: bytes
    new_with_old: bytes | None
    old_with_new: bytes | None


Body = (
    tuple[CertRequestInfo, ...]  # ir, cr, kur
    | bytes  # p10cr: the CSR DER
    | CertRepContent  # ip, cp, kup
    | tuple[CertStatusInfo, ...]  # certConf
    | tuple[int, ...]  # pollReq: certReqIds
    | tuple[PollRepEntry, ...]  # pollRep
    | tuple[InfoValue, ...]  # genm, genp
    | tuple[RevDetailsInfo, ...]  # rr
    | RevRepInfo  # rp
    | ErrorInfo  # error
    | None  # pkiconf
)


@dataclass(frozen=True)
class PKIMessageInfo:
    """A decoded PKIMessage with the exact bytes its protection covers."""

    header: Header
    body_type: str
    body: Body
    protection: bytes | None
    extra_certs: tuple[bytes, ...]
    protected_part: bytes = field(repr=False)
    raw: bytes = field(repr=False)
