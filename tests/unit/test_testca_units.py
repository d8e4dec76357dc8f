"""Unit tests of the test CA's parts: settings, DER readers, state file, engine robustness."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swcmp.cmp import codec, der, keys
from swcmp.cmp.messages import AlgorithmId, ErrorInfo
from swcmp.cmp.protection import MacProtection
from swcmp.cmp.protection import pbm_params as parse_pbm_params
from swcmp.errors import ConfigError, ProtocolError, StorageError
from swcmp.testca import CAConfig, parse_duration
from swcmp.testca.authority import Authority
from swcmp.testca.derutil import (
    name_from_der,
    oid_of,
    parse_extensions,
    peek_header,
)
from swcmp.testca.engine import CMPEngine
from swcmp.testca.state import CertRecord, StateStore, TxRecord

NOW = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("30m", 1800), ("1h", 3600), ("7d", 604800), ("3600", 3600), ("1.5h", 5400),
])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "soon", "0", "-1h", "1w", "h"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


@pytest.mark.parametrize("kw", [
    {"mac_ref": b"1"},
    {"mac_secret": b"x"},
    {"mac_ref": b"1", "mac_secret": b""},
    {"fault": "crash"},
    {"reject": ("noSuchFailure",)},
    {"key_type": "dsa:1024"},
    {"poll": -1},
    {"validity": dt.timedelta(0)},
])
def test_config_refuses(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        CAConfig(**kw)  # type: ignore[arg-type]


def test_config_never_shows_the_secret() -> None:
    assert "hunter2" not in repr(CAConfig(mac_ref=b"1", mac_secret=b"hunter2"))


# ---------------------------------------------------------------------- DER readers


def test_oid_of_reads_large_arcs() -> None:
    exts = codec.extensions_der([("2.999.1.4294967296", False, b"\x05\x00"),
                                 ("1.3.6.1.5.5.7.4.17", True, b"\x05\x00")])
    parsed = parse_extensions(exts)
    assert [(e.oid, e.critical, e.value) for e in parsed] == [
        ("2.999.1.4294967296", False, b"\x05\x00"), ("1.3.6.1.5.5.7.4.17", True, b"\x05\x00")]
    with pytest.raises(ProtocolError):
        oid_of(der.single(b"\x06\x02\x2a\x86"))  # last arc unterminated


@pytest.mark.parametrize("attrs", [
    [[x509.NameAttribute(NameOID.COMMON_NAME, "gw1.example.net")]],
    [[x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")],
     [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Exämple GmbH")],
     [x509.NameAttribute(NameOID.COMMON_NAME, "vpn", _type=_ASN1Type.PrintableString)]],
    [[x509.NameAttribute(NameOID.EMAIL_ADDRESS, "ops@example.net"),
      x509.NameAttribute(NameOID.COMMON_NAME, "multi")]],
    [[x509.NameAttribute(NameOID.COMMON_NAME, "bmp ☃", _type=_ASN1Type.BMPString)]],
])
def test_name_from_der_round_trips(attrs: list[list[x509.NameAttribute[str]]]) -> None:
    name = x509.Name([x509.RelativeDistinguishedName(a) for a in attrs])
    der_bytes = name.public_bytes()
    assert name_from_der(der_bytes).public_bytes() == der_bytes


@pytest.mark.parametrize("data", [
    b"\x31\x00",  # a SET, not a SEQUENCE
    b"\x30\x02\x30\x00",  # RDN that is not a SET
    b"\x30\x02\x31\x00",  # empty RDN
    b"\x30\x0b\x31\x09\x30\x07\x06\x03\x55\x04\x03\x02\x00",  # INTEGER value
    b"\x30\x0b\x31\x09\x30\x07\x06\x03\x55\x04\x03\x13\xff",  # truncated
])
def test_name_from_der_refuses(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        name_from_der(data)


def test_pbm_params_and_peek_header() -> None:
    prot = MacProtection(reference=b"r", secret=b"s", mac_alg="hmac-sha1", iterations=777).start()
    assert prot.alg.params_der is not None
    params = parse_pbm_params(prot.alg.params_der)
    assert params.iterations == 777 and params.mac_oid == "1.3.6.1.5.5.8.1.2"
    tid, nonce = os.urandom(16), os.urandom(16)
    header = codec.encode_header(codec.HeaderFields(
        sender_der=codec.NULL_DN_DER, recipient_der=codec.NULL_DN_DER, transaction_id=tid,
        sender_nonce=nonce, pvno=7))
    msg = codec.assemble(header, codec.pkiconf_body(), None)
    peek = peek_header(msg)
    assert (peek.pvno, peek.transaction_id, peek.sender_nonce, peek.body_tag) == \
        (7, tid, nonce, 19)
    assert peek_header(b"\x30\x80garbage").transaction_id is None


# ---------------------------------------------------------------------- state file


def _records(store: StateStore) -> None:
    store.issued[0x1234] = CertRecord(serial=0x1234, subject="CN=a", status="confirmed",
                                      not_after=NOW, issued_at=NOW, transaction="ab")
    store.issued[0x99] = CertRecord(serial=0x99, subject="CN=b", status="revoked",
                                    not_after=NOW, issued_at=NOW, transaction="cd",
                                    reason="rr")
    tid = bytes(range(16))
    store.transactions[tid] = TxRecord(
        transaction_id=tid, request="kur", reply="kup", state="waiting", cert_req_id=0,
        serial=0x1234, protection="signature", signer_serial=0x99, last_nonce=b"\x01" * 16,
        polls_left=2, implicit_requested=True, ca_pubs=False, status=1, status_text=("x",),
        started=NOW)
    store.finish(b"\x02" * 16, NOW)


def test_state_round_trip(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    with store.changing():
        _records(store)
    data = json.loads((tmp_path / "state.json").read_text())
    assert data["revoked"] == ["99"]
    again = StateStore.open(tmp_path)
    assert again.issued == store.issued
    assert again.transactions == store.transactions
    assert again.finished == store.finished
    assert again.in_use(bytes(range(16))) and again.in_use(b"\x02" * 16)
    # a changed record is written anew, not from the cache of its old line
    with again.changing():
        again.issued[0x1234].status = "revoked"
    assert json.loads((tmp_path / "state.json").read_text())["revoked"] == ["1234", "99"]


def test_state_change_that_raises_is_not_saved(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path)
    with pytest.raises(RuntimeError), store.changing():
        raise RuntimeError
    assert not (tmp_path / "state.json").exists()


@pytest.mark.parametrize("content", [
    "{", '{"version": 2, "issued": {}, "transactions": {}}',
    '{"version": 1, "issued": {"1": {"serial": "1", "status": "odd"}}, "transactions": {}}',
])
def test_damaged_state_is_a_storage_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "state.json").write_text(content)
    with pytest.raises(StorageError, match="state"):
        StateStore.open(tmp_path)


def test_authority_refuses_half_a_ca(tmp_path: Path) -> None:
    Authority.load_or_create(tmp_path, key_type="ecdsa:p256", now=NOW)
    (tmp_path / "ca.crt").unlink()
    with pytest.raises(ConfigError, match="only one"):
        Authority.load_or_create(tmp_path, key_type="ecdsa:p256", now=NOW)


# ---------------------------------------------------------------------- engine robustness


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> CMPEngine:
    directory = tmp_path_factory.mktemp("ca")
    authority = Authority.load_or_create(directory, key_type="ecdsa:p256",
                                         now=dt.datetime.now(dt.UTC))
    return CMPEngine(authority, StateStore.open(directory),
                     CAConfig(mac_ref=b"1234", mac_secret=b"pw"))


def _error_of(answer: bytes) -> tuple[str, ...]:
    msg = codec.decode_message(answer)
    assert msg.body_type == "error"
    assert isinstance(msg.body, ErrorInfo)
    return msg.body.status.fail_names


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_engine_answers_any_bytes_with_a_cmp_error(engine: CMPEngine, data: bytes) -> None:
    assert len(_error_of(engine.handle(data))) == 1


def test_engine_answers_every_truncation_of_a_request(engine: CMPEngine) -> None:
    key = keys.generate_key("ecdsa:p256")
    alg = keys.default_signature_algorithm(key)

    def pop(data: bytes) -> tuple[AlgorithmId, bytes]:
        return AlgorithmId(alg.oid, alg.params_der), keys.sign(key, alg, data)

    body = codec.cert_req_body("ir", [codec.CertReqSpec(
        cert_req_id=0, spki_der=keys.spki_der(key), subject_der=codec.NULL_DN_DER,
        sign_pop=pop)])
    prot = MacProtection(reference=b"1234", secret=b"pw").start()
    header = codec.encode_header(codec.HeaderFields(
        sender_der=codec.NULL_DN_DER, recipient_der=codec.NULL_DN_DER,
        transaction_id=os.urandom(16), sender_nonce=os.urandom(16), protection_alg=prot.alg,
        sender_kid=prot.sender_kid))
    msg = codec.assemble(header, body, prot.protect(codec.protected_part(header, body)))
    # the template has neither subject nor SANs: refused, but only after all the checks
    assert _error_of(engine.handle(msg)) == ("badCertTemplate",)
    for cut in range(1, len(msg), 7):
        assert len(_error_of(engine.handle(msg[:cut]))) == 1
