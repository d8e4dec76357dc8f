"""Every flow through the real CLI against the Siemens Mock CA, an RFC 9483 CA by other authors.

The Mock CA wants what a strict Lightweight CMP CA wants: MAC reference = the sender's
CN, signed requests with their chain up to and including its root (``--extra-certs``),
and it signs its answers with a root whose keyUsage is keyCertSign/cRLSign only
(``--ignore-keyusage``). Its issued certificates chain directly to its Ed25519 root.
Each test enrolls its own subject, so the tests share one Mock CA (start-up takes long).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

import siemens_mock
from siemens_mock import CA_NAME, ROOT_CERT, SECRET, MockCA
from swcmp.cli import cli
from swcmp.cli.render import format_serial
from swcmp.cmp import certs, keys
from swcmp.enroll import mac_protection, make_client, response_trust, signature_protection
from swcmp.paths import Paths
from swcmp.sessionfile import SessionStore
from swcmp.store import Journal

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(siemens_mock.unavailable() is not None,
                       reason=siemens_mock.unavailable() or ""),
]


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockCA]:
    # --allow-same-key: a CR for the key the gateway already holds is an everyday
    # request, which the Mock CA refuses by default (one key per CN).
    with siemens_mock.mock_ca(tmp_path_factory.mktemp("mockca"), allow_same_key=True) as ca:
        yield ca


def root() -> x509.Certificate:
    return x509.load_pem_x509_certificate(ROOT_CERT.read_bytes())


class Gateway:
    """swcmp's directories and one session ``gw`` for subject CN=<cn>."""

    def __init__(self, base: Path, cn: str, url: str) -> None:
        self.cn = cn
        self.config_dir, self.state_dir = base / "etc", base / "var"
        self.swanctl_dir = base / "swanctl"
        self.secret = base / "mac.secret"
        self.secret.write_text(SECRET + "\n")
        self.secret.chmod(0o600)
        self.url = url

    def run(self, *args: str, code: int | None = 0) -> Result:
        opts = ["--config-dir", str(self.config_dir), "--state-dir", str(self.state_dir),
                "--swanctl-dir", str(self.swanctl_dir), "--vici", "none"]
        result = CliRunner().invoke(cli, [*opts, *args], prog_name="swcmp")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"unexpected exception {result.exception!r}\n{result.output}")
        assert SECRET not in result.output
        if code is not None:
            assert result.exit_code == code, result.output
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self.run("--json", *args, code=code).stdout)

    def create(self, *extra: str) -> None:
        self.run("session", "create", "gw", "--entity", f"/CN={self.cn}",
                 "--san", f"DNS:{self.cn}", "--ca-name", CA_NAME, "--server-url", self.url,
                 "--mac-ref", self.cn, "--mac-secret-file", str(self.secret),
                 # the key type the Mock CA's certificate request template asks for
                 "--trust", str(ROOT_CERT), "--key-type", "rsa:2048", *extra)

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(
            (self.swanctl_dir / "x509" / "gw.crt").read_bytes())

    @property
    def key(self) -> keys.PrivateKey:
        return keys.load_private_key((self.swanctl_dir / "private" / "gw.key").read_bytes())

    def paths(self) -> Paths:
        return Paths(config_dir=self.config_dir, state_dir=self.state_dir,
                     swanctl_dir=self.swanctl_dir)

    def session(self) -> Any:
        return SessionStore(self.config_dir).load("gw")

    def assert_pair(self) -> None:
        """The stored certificate is for the stored key and was issued by the Mock CA's root."""
        cert, key = self.cert, self.key
        assert keys.spki_der(cert.public_key()) == keys.spki_der(key)  # type: ignore[arg-type]
        cert.verify_directly_issued_by(root())
        assert cert.subject.rfc4514_string() == f"CN={self.cn}"


def test_ir_with_mac_then_check_passes(mock: MockCA, tmp_path: Path) -> None:
    gw = Gateway(tmp_path, "swcmp-ir-mac.example.net", mock.url)
    gw.create()
    ir = gw.json("request", "initial", "gw")
    assert ir["ok"] is True and ir["action"] == "ir"
    gw.assert_pair()
    assert ir["serial"] == f"{gw.cert.serial_number:x}"
    assert gw.cert.extensions.get_extension_for_oid(
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value.get_values_for_type(
        x509.DNSName) == [gw.cn]
    stats = gw.json("stats", "gw")["sessions"][0]["stats"]
    assert stats["ir"]["received"] == 1 and stats["certConf"]["sent"] == 1
    check = gw.json("session", "check", "gw")
    assert check["ok"] is True, [c for c in check["checks"] if not c["ok"]]


def test_ir_with_pbmac1(mock: MockCA, tmp_path: Path) -> None:
    """--mac-alg pbmac1: PBMAC1 (PBKDF2, HMAC-SHA256; RFC 9481 6.1.2) that the Mock CA
    verifies; with a wrong secret the same request is refused."""
    gw = Gateway(tmp_path, "swcmp-ir-pbmac1.example.net", mock.url)
    gw.create("--mac-alg", "pbmac1", "--mac-iterations", "2000")
    shown = gw.json("session", "show", "gw")
    assert shown["mac_alg"] == "pbmac1" and shown["mac_iterations"] == 2000, shown
    ir = gw.json("request", "initial", "gw")
    assert ir["ok"] is True and ir["action"] == "ir"
    gw.assert_pair()
    (tmp_path / "bad").mkdir()
    bad = Gateway(tmp_path / "bad", "swcmp-ir-pbmac1-bad.example.net", mock.url)
    bad.create("--mac-alg", "pbmac1")
    bad.secret.write_text("not-the-secret\n")
    assert bad.run("request", "initial", "gw", code=None).exit_code != 0


def test_ir_wrong_secret_is_refused_and_nothing_stored(mock: MockCA, tmp_path: Path) -> None:
    gw = Gateway(tmp_path, "swcmp-ir-bad.example.net", mock.url)
    gw.create()
    gw.secret.write_text("not-the-secret\n")
    result = gw.run("request", "initial", "gw", code=None)
    assert result.exit_code != 0
    assert "badMessageCheck" in result.output or "MAC" in result.output, result.output
    assert not (gw.swanctl_dir / "x509" / "gw.crt").exists()


def test_ir_with_implicit_confirm_skips_certconf(mock: MockCA, tmp_path: Path) -> None:
    gw = Gateway(tmp_path, "swcmp-ir-ic.example.net", mock.url)
    gw.create("--implicit-confirm")
    assert gw.json("request", "initial", "gw")["ok"] is True
    gw.assert_pair()
    stats = gw.json("stats", "gw")["sessions"][0]["stats"]
    assert stats["ir"]["received"] == 1
    assert stats.get("certConf", {}).get("sent", 0) == 0  # the CA granted implicitConfirm


def enrolled(mock: MockCA, tmp_path: Path, cn: str) -> Gateway:
    """A gateway after an IR under MAC, set up for signed requests to the Mock CA."""
    gw = Gateway(tmp_path, cn, mock.url)
    gw.create("--extra-certs", str(ROOT_CERT))
    assert gw.json("request", "initial", "gw")["ok"] is True
    return gw


def test_signed_answer_needs_ignore_keyusage_and_says_so(mock: MockCA, tmp_path: Path) -> None:
    gw = enrolled(mock, tmp_path, "swcmp-ku.example.net")
    before = gw.cert
    result = gw.run("request", "certificate", "gw", code=None)
    assert result.exit_code != 0
    assert "--ignore-keyusage" in result.output, result.output
    assert gw.cert == before  # nothing was replaced
    gw.assert_pair()


@pytest.mark.parametrize(("kind", "flags"), [("cr", ()), ("p10cr", ("--pkcs10",))])
def test_cr_signed_and_p10cr(mock: MockCA, tmp_path: Path, kind: str,
                             flags: tuple[str, ...]) -> None:
    gw = enrolled(mock, tmp_path, f"swcmp-{kind}.example.net")
    gw.run("session", "set", "gw", "--ignore-keyusage")
    before = gw.cert
    answer = gw.json("request", "certificate", "gw", *flags)
    assert answer["ok"] is True and answer["action"] == kind
    gw.assert_pair()
    assert gw.cert.serial_number != before.serial_number


def test_kur_with_new_key(mock: MockCA, tmp_path: Path) -> None:
    gw = enrolled(mock, tmp_path, "swcmp-kur.example.net")
    gw.run("session", "set", "gw", "--ignore-keyusage")
    old_cert, old_key = gw.cert, gw.key
    kur = gw.json("request", "keyupdate", "gw", "--regenerate")
    assert kur["ok"] is True and kur["action"] == "kur"
    gw.assert_pair()
    assert keys.spki_der(gw.key) != keys.spki_der(old_key)
    assert gw.cert.serial_number != old_cert.serial_number
    # The Mock CA revokes what a KUR replaced: a second KUR from the old certificate
    # would be refused (certRevoked), which is why swcmp signs with the new one.
    assert gw.json("request", "keyupdate", "gw", "--regenerate")["ok"] is True
    gw.assert_pair()


def test_renewal_with_a_new_key_by_cr(mock: MockCA, tmp_path: Path) -> None:
    """`--renew-with cr`: the staged renewal (`request keyupdate --regenerate`) asks for the
    new key's certificate with a cr signed with the current certificate."""
    gw = enrolled(mock, tmp_path, "swcmp-renew-cr.example.net")
    gw.run("session", "set", "gw", "--ignore-keyusage", "--renew-with", "cr")
    old_cert, old_key = gw.cert, gw.key
    renewed = gw.json("request", "keyupdate", "gw", "--regenerate")
    assert renewed["ok"] is True and renewed["action"] == "cr", renewed
    gw.assert_pair()
    assert keys.spki_der(gw.key) != keys.spki_der(old_key)
    assert gw.cert.serial_number != old_cert.serial_number
    assert gw.cert.subject == old_cert.subject


def test_a_renewal_by_cr_with_a_key_type_the_template_forbids_is_named_as_such(
        mock: MockCA, tmp_path: Path) -> None:
    """The Mock CA's template takes RSA 2048 only: a renewal by cr that would make an
    Ed25519 key is refused before anything but the template question is sent, and the
    refusal names the request that was not sent (a cr, not a key update)."""
    gw = enrolled(mock, tmp_path, "swcmp-template-cr.example.net")
    gw.run("session", "set", "gw", "--ignore-keyusage", "--renew-with", "cr",
           "--key-type", "ed25519")
    before = gw.cert
    refused = gw.json("request", "keyupdate", "gw", "--regenerate", code=1)
    assert "key type ed25519" in refused["error"], refused
    assert "the renewal by cr was not sent" in refused["error"], refused
    assert "--key-type rsa:2048" in refused["hint"], refused
    assert gw.cert == before


def test_renewal_by_p10cr_whose_certificate_is_no_renewal_is_refused(mock: MockCA,
                                                                      tmp_path: Path) -> None:
    """`--renew-with p10cr`: the Mock CA issues for a p10cr a certificate without the
    requested subjectAltNames and ending before the current one; swcmp refuses it in
    certConf and keeps the live pair."""
    gw = enrolled(mock, tmp_path, "swcmp-renew-p10cr.example.net")
    gw.run("session", "set", "gw", "--ignore-keyusage", "--renew-with", "p10cr")
    old_cert, old_key = gw.cert, gw.key
    refused = gw.run("--json", "request", "keyupdate", "gw", "--regenerate", code=None)
    assert refused.exit_code == 1
    assert "lacks requested subjectAltNames" in refused.stderr
    assert json.loads(refused.stdout)["code"] == "certificate_rejected"
    assert gw.cert == old_cert and keys.spki_der(gw.key) == keys.spki_der(old_key)
    gw.assert_pair()


def test_kur_without_root_in_extracerts_is_refused(mock: MockCA, tmp_path: Path) -> None:
    gw = enrolled(mock, tmp_path, "swcmp-kur-noroot.example.net")
    gw.run("session", "set", "gw", "--ignore-keyusage")
    gw.run("session", "unset", "gw", "extra_certs")
    before_cert, before_key = gw.cert, gw.key
    result = gw.run("request", "keyupdate", "gw", "--regenerate", code=None)
    assert result.exit_code != 0
    assert "signerNotTrusted" in result.output or "not trusted" in result.output, result.output
    assert gw.cert == before_cert
    assert keys.spki_der(gw.key) == keys.spki_der(before_key)


# genm and rr: the CLI commands for them are issue 13; the library does the exchange.

def library_client(gw: Gateway) -> Any:
    session, paths = gw.session(), gw.paths()
    return make_client(session, paths=paths), session, paths


def test_genm_ca_certs(mock: MockCA, tmp_path: Path) -> None:
    gw = enrolled(mock, tmp_path, "swcmp-genm.example.net")
    client, session, _ = library_client(gw)
    got = client.ca_certs(protection=mac_protection(session))
    assert got, "the Mock CA sent no CA certificates"
    anchor = root()
    for c in got:  # each one is the root or chains to it
        if c != anchor:
            certs.build_chain(c, anchors=[anchor], untrusted=list(got),
                              now=c.not_valid_before_utc, check_leaf_validity=True)


def test_genm_root_ca_update(mock: MockCA, tmp_path: Path) -> None:
    gw = enrolled(mock, tmp_path, "swcmp-rootca.example.net")
    client, session, _ = library_client(gw)
    # Asked with id-it-rootCaCert (20), the CA answers id-it-rootCaKeyUpdate (18):
    # with the OIDs swapped it answers badRequest.
    update = client.root_ca_update(protection=mac_protection(session), old_root=root())
    assert update is not None, "the Mock CA announced no root CA key update"
    # The Mock CA's next root has an ML-DSA key; what a gateway can check with the
    # root it trusts today is newWithOld: the new key, certified by the current root.
    new_with_old = x509.load_der_x509_certificate(update.new_with_old or b"")
    new_with_old.verify_directly_issued_by(root())
    new_with_new = x509.load_der_x509_certificate(update.new_with_new)
    assert new_with_new.subject == new_with_old.subject == root().subject
    assert new_with_new.serial_number == new_with_old.serial_number


def test_rr_with_reason_then_kur_refused(mock: MockCA, tmp_path: Path) -> None:
    gw = enrolled(mock, tmp_path, "swcmp-rr.example.net")
    gw.run("session", "set", "gw", "--ignore-keyusage")
    client, session, paths = library_client(gw)
    trust = response_trust(session, paths)
    assert trust.ignore_keyusage
    status = client.revoke(cert=gw.cert, protection=signature_protection(session, paths),
                           reason=4)  # superseded
    assert status.granted
    result = gw.run("request", "keyupdate", "gw", "--regenerate", code=None)
    assert result.exit_code != 0
    assert "certRevoked" in result.output, result.output


# The same flows through the CLI (issue 13): what an operator runs.

def test_cli_cacerts_stores_what_chains(mock: MockCA, tmp_path: Path) -> None:
    gw = enrolled(mock, tmp_path, "swcmp-cli-cacerts.example.net")
    gw.run("session", "set", "gw", "--ignore-keyusage")
    got = gw.json("request", "cacerts", "gw")
    assert got["ok"] is True and got["action"] == "cacerts", got
    stored = [x509.load_pem_x509_certificate(Path(p).read_bytes())
              for p in sorted((gw.swanctl_dir / "x509ca").glob("gw-ca*.crt"))]
    assert root() in stored
    # asked again: the same set, nothing rewritten
    again = gw.json("request", "cacerts", "gw")
    assert again["changed"] is False, again
    stats = gw.json("stats", "gw")["sessions"][0]["stats"]
    # the IR's certReqTemplate, then caCerts twice
    assert stats["genm"]["sent"] == 3 and stats["genm"]["received"] == 3


def test_cli_rootca_verifies_the_links_and_refuses_a_root_that_is_no_ca(
        mock: MockCA, tmp_path: Path) -> None:
    # The Mock CA announces an ML-DSA-44 root. Its newWithOld (signed with the Ed25519
    # root) and oldWithNew (signed with the ML-DSA key) both verify, but its newWithNew
    # has no basicConstraints: it cannot be a CA (RFC 5280 4.2.1.9; OpenSSL refuses such
    # an anchor too), so swcmp says so and stores nothing.
    gw = enrolled(mock, tmp_path, "swcmp-cli-rootca.example.net")
    gw.run("session", "set", "gw", "--ignore-keyusage")
    trust_before = gw.session().trust
    result = gw.run("request", "rootca", "gw", code=None)
    assert result.exit_code != 0
    assert ("newWithOld verifies with the current root and oldWithNew with the new key, "
            "but newWithNew cannot be a trust anchor") in result.output, result.output
    assert "basicConstraints" in result.output and "nothing was stored" in result.output
    assert not list((gw.swanctl_dir / "x509ca").glob("gw-root-*"))
    assert gw.session().trust == trust_before
    status = gw.json("status", "gw")["sessions"][0]["ca"]
    assert status["rollover"] is None and len(status["roots"]) == 1
    assert "newWithNew cannot be a trust anchor" in status["last_error"]["rootCaCert"]
    # A refusal by swcmp is not the CA refusing the question: it is asked again.
    assert "rootCaCert" not in status["unsupported"]


def test_cli_revoke_with_reason_then_kur_refused(mock: MockCA, tmp_path: Path) -> None:
    gw = enrolled(mock, tmp_path, "swcmp-cli-rr.example.net")
    gw.run("session", "set", "gw", "--ignore-keyusage")
    serial = f"{gw.cert.serial_number:x}"
    got = gw.json("request", "revoke", "gw", "--reason", "keyCompromise", "--yes")
    assert got["ok"] is True and "keyCompromise" in got["message"], got
    result = gw.run("request", "keyupdate", "gw", "--regenerate", code=None)
    assert result.exit_code != 0 and "certRevoked" in result.output, result.output
    status = gw.run("status", "gw").stdout
    assert f"serial {format_serial(int(serial, 16))} was revoked (keyCompromise)" in status, status
    assert "certRevoked" in status, status  # the refused key update, from the CA's words
    gw.assert_pair()  # the refused renewal left the pair alone


def test_cli_unknown_reason_is_refused_before_sending(mock: MockCA, tmp_path: Path) -> None:
    gw = enrolled(mock, tmp_path, "swcmp-cli-rr-bad.example.net")
    result = gw.run("request", "revoke", "gw", "--reason", "bored", code=None)
    assert result.exit_code != 0 and "superseded" in result.output, result.output
    assert gw.json("stats", "gw")["sessions"][0]["stats"]["rr"]["sent"] == 0


def test_cli_crl_into_x509crl(mock: MockCA, tmp_path: Path) -> None:
    gw = enrolled(mock, tmp_path, "swcmp-cli-crl.example.net")
    gw.run("session", "set", "gw", "--ignore-keyusage")
    gw.json("request", "revoke", "gw", "--reason", "superseded", "--yes")
    serial = gw.cert.serial_number
    got = gw.json("request", "crl", "gw")
    assert got["ok"] is True and got["changed"] is True, got
    crl = x509.load_der_x509_crl((gw.swanctl_dir / "x509crl" / "gw.crl").read_bytes())
    assert crl.is_signature_valid(root().public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    status = gw.json("status", "gw")["sessions"][0]["ca"]
    assert status["crl"]["entries"] == len(crl)
    # crlStatusList (RFC 9483 4.3.4) first: the Mock CA reads CRLSource's [1] implicitly
    # tagged, so it cannot parse the explicit tagging of RFC 9480's module (which OpenSSL
    # 3.5 and pyasn1-alt-modules use) and refuses; swcmp remembers that and asks
    # currentCRL, which brought the CRL above
    assert "crlStatusList" in status["unsupported"], status
    assert "parse" in status["unsupported"]["crlStatusList"]["error"], status
    assert "currentCRL" not in status["unsupported"], status


def test_cli_revoke_superseded_with_a_token_key(mock: MockCA, tmp_path: Path) -> None:
    # The replaced certificate's key is in a SoftHSM2 token: the rr is signed there
    # (the key store keeps the replaced pair until its revocation is done).
    import softhsm

    if softhsm.unavailable() is not None:
        pytest.skip(softhsm.unavailable() or "")
    token = softhsm.new_token(tmp_path)
    gw = Gateway(tmp_path, "swcmp-rr-token.example.net", mock.url)
    gw.create("--extra-certs", str(ROOT_CERT), "--key", token.uri(), "--pkcs11-module",
              str(token.module), "--pin-file", str(token.pin_file), "--ignore-keyusage",
              "--revoke-superseded")
    assert gw.json("request", "initial", "gw")["ok"] is True
    old = gw.cert
    (old_object,) = token.key_ids()
    kur = gw.json("request", "keyupdate", "gw", "--regenerate")
    assert kur["ok"] is True and gw.cert.serial_number != old.serial_number, kur
    stats = gw.json("stats", "gw")["sessions"][0]["stats"]
    # The Mock CA revokes what a KUR replaced by itself, so it answers swcmp's rr with
    # certRevoked: an answer to a request it verified, signed with the old token key.
    assert stats["rr"]["sent"] == 1 and stats["rr"]["received"] == 1, stats
    ca = gw.json("status", "gw")["sessions"][0]["ca"]
    assert not ca["pending_revocations"], ca
    # the revocation is done: the next pass destroys the replaced object
    assert old_object in token.key_ids()
    gw.run("renew", "gw")
    assert old_object not in token.key_ids() and len(token.key_ids()) == 1


def test_a_refused_key_update_is_retried_with_a_new_key(mock: MockCA, tmp_path: Path) -> None:
    # The Mock CA certifies the new key, but signs its answer without digitalSignature:
    # swcmp refuses the answer. Like EJBCA with "enforce unique public keys", the Mock CA
    # then refuses that key for ever ("The public key is already defined for the user"):
    # the next attempt must make a new key, not send the staged one again.
    gw = enrolled(mock, tmp_path, "swcmp-kur-retry.example.net")
    before_cert, before_key = gw.cert, gw.key
    refused = gw.run("request", "keyupdate", "gw", "--regenerate", code=None)
    assert refused.exit_code != 0 and "--ignore-keyusage" in refused.output, refused.output
    assert gw.cert == before_cert and keys.spki_der(gw.key) == keys.spki_der(before_key)
    staged = Journal(gw.paths(), "gw")
    assert staged.load() is None and not staged.key_file.exists()  # destroyed, not kept
    gw.run("session", "set", "gw", "--ignore-keyusage")
    # the Mock CA takes no KUR of this subject until its unconfirmed one times out (10 s)
    time.sleep(11)
    kur = gw.json("request", "keyupdate", "gw", "--regenerate")
    assert kur["ok"] is True, kur
    gw.assert_pair()
    assert keys.spki_der(gw.key) != keys.spki_der(before_key)


# Per-operation paths: the Mock CA serves /issuing/<body> and refuses (HTTP 400) a
# message whose body type is not the one its path names.

def posts_since(mock: MockCA, mark: int, last: tuple[str, str]) -> list[tuple[str, str]]:
    """The (path, HTTP status) of the POSTs the Mock CA logged after ``mark``, up to
    ``last``."""
    deadline = time.monotonic() + 10
    while True:  # its log arrives through a pipe: wait for the last line
        text = re.sub(r"\x1b\[[0-9;]*m", "", bytes(mock.log[mark:]).decode(errors="replace"))
        found = re.findall(r'"POST (\S+) HTTP/1\.[01]" (\d+)', text)
        if last in found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_body_paths_through_the_cli(mock: MockCA, tmp_path: Path) -> None:
    """`--operation-paths body`: ir, kur, genm and rr at /issuing/<body>, and each certConf
    at /issuing/certConf, where the Mock CA checks the body type against the path."""
    gw = Gateway(tmp_path, "swcmp-paths.example.net", mock.url)
    gw.create("--extra-certs", str(ROOT_CERT), "--ignore-keyusage",
              "--operation-paths", "body")
    mark = len(mock.log)
    assert gw.json("request", "initial", "gw")["ok"] is True
    assert gw.json("request", "keyupdate", "gw", "--regenerate")["ok"] is True
    gw.assert_pair()
    assert gw.json("request", "cacerts", "gw")["ok"] is True
    got = gw.json("request", "revoke", "gw", "--reason", "superseded", "--yes")
    assert got["ok"] is True, got
    posts = posts_since(mock, mark, ("/issuing/rr", "200"))
    # the genm (certReqTemplate before the ir and the new key's kur, caCerts) at
    # /issuing/genm; every other message at its own body type
    assert [p for p in posts if p[0] != "/issuing/genm"] == [
        ("/issuing/ir", "200"), ("/issuing/certConf", "200"),
        ("/issuing/kur", "200"), ("/issuing/certConf", "200"), ("/issuing/rr", "200")], posts
    assert posts.count(("/issuing/genm", "200")) >= 2, posts  # template(s) and caCerts
    assert {p for p in posts if p[0] == "/issuing/genm"} == {("/issuing/genm", "200")}


def test_certconf_at_the_ir_path_is_refused(mock: MockCA, tmp_path: Path) -> None:
    """An explicit URL for the ir takes its certConf along (RFC 9483 3.3); the Mock CA,
    which routes by body type, refuses that certConf, and nothing is stored: why it
    needs `--operation-paths body`."""
    gw = Gateway(tmp_path, "swcmp-paths-ir.example.net", mock.url)
    gw.create("--operation-url", f"ir={mock.url}/ir")
    mark = len(mock.log)
    result = gw.run("request", "initial", "gw", code=None)
    assert result.exit_code != 0
    assert "certConf" in result.output, result.output
    assert "--operation-paths" in result.output, result.output
    assert not (gw.swanctl_dir / "x509" / "gw.crt").exists()
    # the certReqTemplate genm has no URL of its own: it goes to the server URL
    assert posts_since(mock, mark, ("/issuing/ir", "400")) == [
        ("/issuing", "200"), ("/issuing/ir", "200"), ("/issuing/ir", "400")]

# certReqTemplate (RFC 9483 4.3.3). The Mock CA's template is an empty certTemplate with
# keySpec id-regCtrl-rsaKeyLen 2048: RSA keys of 2048 bits, any subject.

def test_cli_template_shows_what_the_ca_asks_and_whether_the_session_fits(
        mock: MockCA, tmp_path: Path) -> None:
    gw = Gateway(tmp_path, "swcmp-template.example.net", mock.url)
    gw.create()
    text = gw.run("request", "template", "gw").output
    assert "key types   rsa:2048" in text and "subject     (any)" in text, text
    assert "session     fits" in text, text
    got = gw.json("request", "template", "gw")
    assert got["known"] is True and got["fits"] is True, got
    assert got["template"]["offered"] is True
    assert got["template"]["key_types"] == ["rsa:2048"]
    assert got["template"]["subject"] is None
    gw.run("session", "set", "gw", "--key-type", "ecdsa:p256")
    got = gw.json("request", "template", "gw")
    assert got["fits"] is False and "key type ecdsa:p256" in got["problems"][0], got
    stats = gw.json("stats", "gw")["sessions"][0]["stats"]
    assert stats["genm"] == {"sent": 3, "received": 3, "failed": 0}


def test_ir_with_a_key_type_the_template_forbids_is_not_sent(
        mock: MockCA, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from hostile_proxy import HostileProxy

    with HostileProxy(mock.url) as proxy:
        gw = Gateway(tmp_path, "swcmp-template-ir.example.net", proxy.url)
        gw.create("--key-type", "ecdsa:p256")
        refused = gw.json("request", "initial", "gw", code=1)
        assert "does not allow the key type ecdsa:p256: it allows rsa:2048" in \
            refused["error"], refused
        assert "the initial request was not sent" in refused["error"]
        assert "`swcmp session set gw --key-type rsa:2048`" in refused["hint"], refused
        assert proxy.kinds() == ["genm"]  # the template question, and no ir
        assert not (gw.swanctl_dir / "private" / "gw.key").exists()  # no key was made
        gw.run("session", "set", "gw", "--key-type", "rsa:2048")
        assert gw.json("request", "initial", "gw")["ok"] is True
        assert proxy.kinds() == ["genm", "genm", "ir", "certConf"]
    gw.assert_pair()
    key = gw.key
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048


def test_key_update_with_a_new_key_the_template_forbids_is_not_sent(
        mock: MockCA, tmp_path: Path) -> None:
    from hostile_proxy import HostileProxy
    from swcmp.renewal import interrupted

    gw = enrolled(mock, tmp_path, "swcmp-template-kur.example.net")
    before_cert, before_key = gw.cert, keys.spki_der(gw.key)
    with HostileProxy(mock.url) as proxy:
        gw.run("session", "set", "gw", "--ignore-keyusage", "--key-type", "ed25519",
               "--server-url", proxy.url)
        refused = gw.json("request", "keyupdate", "gw", "--regenerate", code=1)
        assert "key type ed25519" in refused["error"], refused
        assert "the key update was not sent" in refused["error"]
        assert "--key-type rsa:2048" in refused["hint"]
        assert proxy.kinds() == ["genm"]  # no kur; no new key was made either
        assert interrupted(gw.paths(), "gw") is None
        assert gw.cert == before_cert and keys.spki_der(gw.key) == before_key
        gw.run("session", "set", "gw", "--key-type", "rsa:2048")
        assert gw.json("request", "keyupdate", "gw", "--regenerate")["ok"] is True
        assert proxy.kinds()[1:4] == ["genm", "kur", "certConf"], proxy.kinds()
    gw.assert_pair()
    assert keys.spki_der(gw.key) != before_key and gw.cert != before_cert
