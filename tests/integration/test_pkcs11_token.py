"""Keys in a PKCS#11 token (SoftHSM2): signing, enrolment, renewal, kill -9, checks.

Every test uses a real SoftHSM2 token (tests/softhsm.py). The embedded test CA
issues for exactly the key requested; the kill -9 test counts the token's
objects after each interrupted run and after the run that recovers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import siemens_mock
import softhsm
import tpm
from openssl_mock import OPENSSL, mock_server
from pki import make_pki, pem_cert
from swcmp.checks import run_checks
from swcmp.cmp import certs, keys
from swcmp.enroll import request_initial
from swcmp.errors import ConfigError, SwcmpError
from swcmp.keystore.pkcs11 import (
    TokenConfig,
    TokenError,
    TokenStore,
    TokenUri,
    new_key_id,
    read_pin,
)
from swcmp.keystore.token import secrets_file
from swcmp.names import format_dn
from swcmp.paths import Paths
from swcmp.renewal import Renewer
from swcmp.session import Session
from swcmp.sessionfile import SessionStore
from swcmp.store import Journal
from swcmp.testca import CAConfig, TestCA

_UNAVAILABLE = softhsm.unavailable()
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")]

MAC_REF = "4711"
MAC_SECRET = "token-secret-not-for-logs"


# ---------------------------------------------------------------------- URI and PIN


def test_uri_parts_and_refusals() -> None:
    u = TokenUri.parse("pkcs11:token=gw%20a;object=gw1;id=%01%02")
    assert (u.token, u.label, u.key_id) == ("gw a", "gw1", b"\x01\x02")
    for bad, why in [("pkcs11:token=gw", "object"),
                     ("pkcs11:token=gw;object=a?pin-value=1234", "PIN"),
                     ("pkcs11:token=gw;object=a;object=b", "twice"),
                     ("pkcs11:token=gw;object=a;slot=3", "unsupported"),
                     ("pkcs11:object=a;type=cert", "private")]:
        with pytest.raises(ConfigError) as e:
            TokenUri.parse(bad)
        assert why in str(e.value), (bad, e.value)
        assert "1234" not in str(e.value)


def test_pin_file_must_be_private_and_is_never_shown(tmp_path: Path) -> None:
    p = tmp_path / "pin"
    p.write_text("s3cret-pin\n")
    p.chmod(0o644)
    with pytest.raises(ConfigError) as e:
        read_pin(p, session="gw")
    assert "0644" in str(e.value) and "s3cret" not in str(e.value)
    assert "chmod 600" in (e.value.hint or "")
    p.chmod(0o600)
    assert read_pin(p, session="gw") == "s3cret-pin"
    p.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        read_pin(p, session="gw")


# ---------------------------------------------------------------------- signing in the token


@pytest.fixture
def token(tmp_path: Path) -> softhsm.Token:
    return softhsm.new_token(tmp_path)


@pytest.fixture(params=["softhsm", "tpm"])
def any_token(tmp_path: Path, request: pytest.FixtureRequest) -> softhsm.Token:
    """A SoftHSM2 token, or a software TPM 2.0 through tpm2-pkcs11 (tests/tpm.py)."""
    if request.param == "tpm":
        if tpm.unavailable() is not None:
            pytest.skip(tpm.unavailable() or "")
        return tpm.new_token(tmp_path)
    return softhsm.new_token(tmp_path)


def _store(token: softhsm.Token, obj: str = "gw") -> TokenStore:
    return TokenStore(TokenConfig("gw", TokenUri.parse(token.uri(obj)), token.module,
                                  token.pin_file))


@pytest.mark.parametrize("key_type", ["rsa:2048", "ecdsa:p256", "ecdsa:p384"])
def test_token_signs_what_cryptography_verifies(any_token: softhsm.Token,
                                                key_type: str) -> None:
    token = any_token
    store = _store(token)
    key = store.generate(key_type, new_key_id())
    pub = key.public_key()
    assert isinstance(pub, rsa.RSAPublicKey if key_type.startswith("rsa") else
                      ec.EllipticCurvePublicKey)
    algs = [keys.default_signature_algorithm(key)]
    if key_type.startswith("rsa"):
        algs.append(keys.default_signature_algorithm(key, pss=True))
    for alg in algs:
        sig = keys.sign(key, alg, b"to be signed")
        keys.verify(pub, alg, sig, b"to be signed")  # raises if wrong
        with pytest.raises(SwcmpError):
            keys.verify(pub, alg, sig, b"something else")
    # the private half is not extractable and both halves carry the label and CKA_ID
    assert sorted(c for c, _ in token.objects()) == ["PRIVATE_KEY", "PUBLIC_KEY"]
    assert store.pairs()[0].key_id == key.key_id
    assert store.destroy(key.key_id) == 2 and token.objects() == []


def test_wrong_pin_and_missing_token_say_what_to_fix(token: softhsm.Token,
                                                     tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("0000")
    wrong.chmod(0o600)
    store = TokenStore(TokenConfig("gw", TokenUri.parse(token.uri()), token.module, wrong))
    with pytest.raises(TokenError) as e:
        store.pairs()
    assert "refused the PIN" in str(e.value) and token.pin not in str(e.value)
    gone = TokenStore(TokenConfig("gw", TokenUri.parse("pkcs11:token=nosuch;object=gw"),
                                  token.module, token.pin_file))
    with pytest.raises(TokenError, match="no token matches"):
        gone.pairs()
    bad_module = TokenStore(TokenConfig("gw", TokenUri.parse(token.uri()),
                                        tmp_path / "nosuch.so", token.pin_file))
    with pytest.raises(TokenError, match="cannot load the PKCS#11 module"):
        bad_module.pairs()


# ---------------------------------------------------------------------- a session in a token


@pytest.fixture
def ca(tmp_path: Path) -> Iterator[TestCA]:
    ca = TestCA(tmp_path / "ca", config=CAConfig(mac_ref=MAC_REF.encode(),
                                                 mac_secret=MAC_SECRET.encode(),
                                                 validity=timedelta(minutes=5))).start()
    try:
        yield ca
    finally:
        ca.stop()


def make_session(root: Path, ca: TestCA, token: softhsm.Token, *, key_type: str = "ecdsa:p256"
                 ) -> tuple[Paths, SessionStore, Session]:
    paths = Paths(root / "etc", root / "var", root / "swanctl")
    root.mkdir(parents=True, exist_ok=True)
    secret = root / "mac.secret"
    secret.write_text(MAC_SECRET)
    secret.chmod(0o600)
    store = SessionStore(paths.config_dir)
    store.create("gw1", {
        "entity": "CN=gw1.example.net", "sans": ("DNS:gw1.example.net",),
        "ca_name": format_dn(ca.ca_cert.subject), "server_url": ca.url, "ir_auth": "mac",
        "mac_ref": MAC_REF, "mac_secret_file": str(secret), "key": token.uri(),
        "pkcs11_module": str(token.module), "pin_file": str(token.pin_file),
        "key_type": key_type, "regenerate": True, "auto_update": True})
    out = request_initial(store.load("gw1"), paths, store=store)
    assert out.ok and out.key_path is None
    return paths, store, store.load("gw1")


def no_key_files(*dirs: Path) -> list[Path]:
    """Files under ``dirs`` holding a private key (there must be none)."""
    found = []
    for d in dirs:
        for p in d.rglob("*"):
            if p.is_file() and b"PRIVATE KEY" in p.read_bytes():
                found.append(p)
    return found


def matching(paths: Paths, token: softhsm.Token) -> bool:
    """The certificate in x509/ certifies a key pair that is in the token."""
    cert = certs.load_certificate(paths.cert_file("gw1").read_bytes())
    store = _store(token)
    return store.key_for(certs.spki_of(cert)) is not None


def test_ir_and_kur_with_keys_made_in_the_token(tmp_path: Path, ca: TestCA,
                                                any_token: softhsm.Token) -> None:
    token = any_token
    paths, _, session = make_session(tmp_path / "gw", ca, token)
    (first,) = token.key_ids()
    assert matching(paths, token)
    secrets = secrets_file(paths, session)
    assert os.stat(secrets).st_mode & 0o777 == 0o600
    assert f"handle = {first.hex()}" in secrets.read_text()
    results = run_checks(session, paths, now=datetime.now(UTC))
    names = [r.name for r in results]
    for name in ("token-module", "token-present", "token-pin", "key-pair", "token-key-cert",
                 "auth-cert-key"):
        assert name in names
    assert all(r.level == "ok" for r in results if r.name != "token-swanctl"), results

    out = Renewer(paths).renew(session)  # regenerate: a new pair in the token
    assert out.ok
    (second,) = token.key_ids()
    assert second != first  # the old pair was destroyed: no charon holds it (no deployer)
    assert len(token.objects()) == 2
    assert matching(paths, token)
    assert f"handle = {second.hex()}" in secrets.read_text()
    assert no_key_files(paths.state_dir, paths.swanctl_dir) == []
    assert Journal(paths, "gw1").load() is None


def test_check_names_a_token_that_lost_the_key(tmp_path: Path, ca: TestCA,
                                               token: softhsm.Token) -> None:
    paths, _, session = make_session(tmp_path / "gw", ca, token)
    (kid,) = token.key_ids()
    _store(token).destroy(kid)
    results = {r.name: r for r in run_checks(session, paths, now=datetime.now(UTC))}
    bad = results["key-pair"]
    assert not bad.ok and "request initial" in (bad.fix or ""), bad


# ---------------------------------------------------------------------- kill -9 at every step

CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from swcmp.paths import Paths
    from swcmp.sessionfile import SessionStore
    from swcmp.renewal import Renewer

    root, phase = Path(sys.argv[1]), sys.argv[2]
    paths = Paths(root / "etc", root / "var", root / "swanctl")
    session = SessionStore(paths.config_dir).load("gw1")

    def checkpoint(p):
        if p == phase:
            os.kill(os.getpid(), signal.SIGKILL)

    Renewer(paths, checkpoint=checkpoint).renew(session, regenerate=True)
    sys.exit(3)  # the kill did not happen
""")

TOKEN_PHASES = ["key-making", "key-ready", "sending", "received", "staged", "confirmed",
                "committing", "cert-written", "secrets-written", "done"]


@pytest.mark.parametrize("phase", TOKEN_PHASES)
def test_kill_9_leaves_a_matching_pair_and_at_most_one_stray_object(
        tmp_path: Path, ca: TestCA, token: softhsm.Token, phase: str) -> None:
    paths, _, session = make_session(tmp_path / "gw", ca, token)
    (old,) = token.key_ids()
    res = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "gw"), phase],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ})
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    # after the kill: the certificate in storage certifies a pair in the token, and the
    # token holds at most one pair besides it
    assert matching(paths, token)
    after_kill = token.key_ids()
    assert old in after_kill or phase in ("cert-written", "secrets-written", "done")
    assert len(after_kill) <= 2, after_kill
    entry = Journal(paths, "gw1").load()
    if len(after_kill) == 2 and phase != "done":
        assert entry is not None  # the extra pair is on record
        recorded = {entry.token_id, entry.token_old}
        assert {k.hex() for k in after_kill} <= recorded | {old.hex()}

    out = Renewer(paths).renew(session, regenerate=True)
    assert out.ok
    # recovered: one pair, the one the certificate certifies; nothing else left
    (now,) = token.key_ids()
    assert len(token.objects()) == 2
    assert matching(paths, token) and now != old
    assert Journal(paths, "gw1").load() is None
    assert no_key_files(paths.state_dir, paths.swanctl_dir) == []
    assert f"handle = {now.hex()}" in secrets_file(paths, session).read_text()


def test_p10cr_with_a_token_key_is_refused_clearly(tmp_path: Path, ca: TestCA,
                                                   token: softhsm.Token) -> None:
    from swcmp.enroll import request_certificate

    paths, store, session = make_session(tmp_path / "gw", ca, token)
    with pytest.raises(ConfigError, match="PKCS#10"):
        request_certificate(session, paths, store=store, pkcs10=True)


def test_a_cr_renewal_abandoned_at_its_poll_limit_destroys_its_new_pair_in_the_token(
        tmp_path: Path, token: softhsm.Token) -> None:
    """A renewal by cr with a new pair made in the token, which the CA keeps waiting past
    the session's poll_limit: the transaction is abandoned and that pair destroyed in the
    token (the live one stays); the next run makes another and is certified by a cr."""
    from swcmp.errors import TransactionAbandoned

    def config(**knobs: object) -> CAConfig:
        return CAConfig(mac_ref=MAC_REF.encode(), mac_secret=MAC_SECRET.encode(),
                        validity=timedelta(minutes=5), **knobs)  # type: ignore[arg-type]

    ca = TestCA(tmp_path / "ca", config=config()).start()
    try:
        paths, store, _ = make_session(tmp_path / "gw", ca, token)
        store.update("gw1", set_values={"renew_with": "cr", "poll_limit": 2})
        (live,) = token.key_ids()
        port = ca.port
        ca.stop()
        ca = TestCA(tmp_path / "ca", config=config(poll=1000, check_after=1), port=port).start()
        with pytest.raises(TransactionAbandoned, match="poll_limit"):
            Renewer(paths).renew(store.load("gw1"))
        assert token.key_ids() == {live} and len(token.objects()) == 2
        assert Journal(paths, "gw1").load() is None and matching(paths, token)
        ca.stop()
        ca = TestCA(tmp_path / "ca", config=config(), port=port).start()
        out = Renewer(paths).renew(store.load("gw1"))
        assert out.ok and out.action == "cr"
        (now,) = token.key_ids()
        assert now != live and matching(paths, token)
    finally:
        ca.stop()


# ---------------------------------------------------------------------- an independent peer


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_kur_signed_in_the_token_is_accepted_by_openssl_cmp(tmp_path: Path,
                                                             token: softhsm.Token) -> None:
    """``openssl cmp``'s mock server checks the request's signature protection and its
    POP, both made by the token (same-key KUR: the 3.0 mock returns one fixed certificate,
    issued here for the token's public key with the old serial)."""
    pki = make_pki(tmp_path / "pki")
    store = _store(token)
    tk = store.generate("ecdsa:p256", new_key_id())
    current = pki.issue(tk.public_key(), serial=0x1234)
    renewed = pki.issue(tk.public_key(), serial=0x1234, days=400)
    pki.write("rsp.crt", pem_cert(renewed))
    paths = Paths(tmp_path / "gw" / "etc", tmp_path / "gw" / "var", tmp_path / "gw" / "swanctl")
    paths.x509_dir.mkdir(parents=True)
    paths.cert_file("gw1").write_bytes(pem_cert(current))
    with mock_server(["-srv_cert", "srv.crt", "-srv_key", "srv.key", "-srv_trusted",
                      "root.crt", "-rsp_cert", "rsp.crt"], cwd=pki.dir) as url:
        session = SessionStore(paths.config_dir).create("gw1", {
            "entity": "CN=gw1.example.net", "sans": ("DNS:gw1.example.net",),
            "ca_name": "CN=swcmp Test Root CA", "server_url": url, "ir_auth": "signature",
            "trust": (str(pki.dir / "root.crt"),), "key": token.uri(),
            "pkcs11_module": str(token.module), "pin_file": str(token.pin_file),
            "auto_update": True})
        out = Renewer(paths).renew(session)
    assert out.ok and out.serial == "1234"
    assert certs.load_certificate(paths.cert_file("gw1").read_bytes()) == renewed
    assert token.key_ids() == {tk.key_id}  # the same pair, re-certified
    assert no_key_files(paths.state_dir, paths.swanctl_dir) == []


@pytest.mark.skipif(siemens_mock.unavailable() is not None,
                    reason=siemens_mock.unavailable() or "")
def test_ir_and_kur_with_a_token_key_at_the_siemens_mock_ca(tmp_path: Path,
                                                             token: softhsm.Token) -> None:
    """The Siemens Mock CA issues for the key requested: IR (MAC, POP by the token) and
    a KUR with a new pair made in the token (protection by the old pair, POP by the new)."""
    from click.testing import CliRunner

    from swcmp.cli import cli

    secret = tmp_path / "mac.secret"
    secret.write_text(siemens_mock.SECRET + "\n")
    secret.chmod(0o600)
    base = ["--config-dir", str(tmp_path / "etc"), "--state-dir", str(tmp_path / "var"),
            "--swanctl-dir", str(tmp_path / "swanctl"), "--vici", "none"]

    def run(*args: str) -> str:
        res = CliRunner().invoke(cli, [*base, *args], prog_name="swcmp")
        assert res.exit_code == 0, res.output
        assert token.pin not in res.output and siemens_mock.SECRET not in res.output
        return res.output

    cn = "swcmp-token.example.net"
    with siemens_mock.mock_ca(tmp_path / "mockca") as mock:
        # rsa:2048: the key type the Mock CA's certificate request template asks for
        run("session", "create", "gw", "--entity", f"/CN={cn}", "--san", f"DNS:{cn}",
            "--ca-name", siemens_mock.CA_NAME, "--server-url", mock.url, "--mac-ref", cn,
            "--mac-secret-file", str(secret), "--trust", str(siemens_mock.ROOT_CERT),
            "--extra-certs", str(siemens_mock.ROOT_CERT), "--key-type", "rsa:2048",
            "--key", token.uri(), "--pkcs11-module", str(token.module),
            "--pin-file", str(token.pin_file), "--ignore-keyusage")
        run("request", "initial", "gw")
        paths = Paths(tmp_path / "etc", tmp_path / "var", tmp_path / "swanctl")
        (first,) = token.key_ids()
        first_cert = certs.load_certificate(paths.cert_file("gw").read_bytes())
        run("request", "keyupdate", "gw", "--regenerate")
    cert = certs.load_certificate(paths.cert_file("gw").read_bytes())
    (second,) = token.key_ids()
    assert second != first and cert.serial_number != first_cert.serial_number
    assert _store(token).key_for(certs.spki_of(cert)) is not None
    cert.verify_directly_issued_by(
        certs.load_certificate(siemens_mock.ROOT_CERT.read_bytes()))
    assert no_key_files(paths.state_dir, paths.swanctl_dir) == []


def test_cli_refuses_a_readable_pin_file_and_never_shows_the_pin(tmp_path: Path,
                                                                 token: softhsm.Token) -> None:
    from click.testing import CliRunner

    from swcmp.cli import cli

    base = ["--config-dir", str(tmp_path / "etc"), "--state-dir", str(tmp_path / "var"),
            "--swanctl-dir", str(tmp_path / "swanctl"), "--vici", "none"]
    run = CliRunner().invoke
    res = run(cli, [*base, "session", "create", "gw", "--entity", "CN=gw",
                    "--key", token.uri(), "--pkcs11-module", str(token.module),
                    "--pin-file", str(token.pin_file)])
    assert res.exit_code == 0, res.output
    show = run(cli, [*base, "session", "show", "gw"])
    assert str(token.pin_file) in show.output and token.pin not in show.output
    check = run(cli, [*base, "session", "check", "gw"])
    assert "token-pin" in check.output and token.pin not in check.output
    token.pin_file.chmod(0o644)
    res = run(cli, [*base, "session", "set", "gw", "--pin-file", str(token.pin_file)])
    assert res.exit_code != 0 and "chmod 600" in res.output and token.pin not in res.output
    res = run(cli, [*base, "session", "set", "gw", "--key",
                    f"pkcs11:token={token.label};object=gw?pin-value={token.pin}"])
    assert res.exit_code != 0 and "0600 file" in res.output and token.pin not in res.output


# --------------------------------------------------------------------------- review mends


def test_the_id_attribute_is_read_from_its_own_attribute() -> None:
    # `=` is legal inside an RFC 7512 value: object=vpnid=1 is a label, not an id
    assert TokenUri.parse("pkcs11:token=gw;object=vpnid=1;id=%02").key_id == b"\x02"
    assert TokenUri.parse("pkcs11:token=gw;object=x;ID=%0a%0b").key_id == b"\x0a\x0b"


def test_regenerate_with_a_fixed_id_is_refused_before_the_ca_is_asked(
        tmp_path: Path, token: softhsm.Token) -> None:
    ca = TestCA(tmp_path / "ca", config=CAConfig(mac_ref=MAC_REF.encode(),
                mac_secret=MAC_SECRET.encode(), validity=timedelta(minutes=5))).start()
    try:
        paths, store, _ = make_session(tmp_path / "gw", ca, token)
        (kid,) = token.key_ids()
        fixed = token.uri() + ";id=" + "".join(f"%{b:02x}" for b in kid)
        with pytest.raises(ConfigError, match="cannot be combined with regenerate"):
            store.update("gw1", set_values={"key": fixed})  # the session refuses it
        store.update("gw1", set_values={"key": fixed, "regenerate": False})
        objects = token.objects()
        requests_before = dict(ca.engine.requests)
        with pytest.raises(ConfigError, match="nothing was asked of the CA"):
            Renewer(paths).renew(store.load("gw1"), regenerate=True)
        assert token.objects() == objects and Journal(paths, "gw1").load() is None
        assert dict(ca.engine.requests) == requests_before
    finally:
        ca.stop()


def test_no_deploy_keeps_the_replaced_pair_charon_may_still_use(
        tmp_path: Path, token: softhsm.Token) -> None:
    from swcmp import keystore

    ca = TestCA(tmp_path / "ca", config=CAConfig(mac_ref=MAC_REF.encode(),
                mac_secret=MAC_SECRET.encode(), validity=timedelta(minutes=5))).start()
    try:
        paths, _, session = make_session(tmp_path / "gw", ca, token)
        (old,) = token.key_ids()
        Renewer(paths, charon_untouched=True).renew(session, regenerate=True)
        assert old in token.key_ids() and len(token.key_ids()) == 2  # charon may sign with it
        keystore.open(session, paths).collect(None)  # a later pass, no charon on this host
        assert old not in token.key_ids() and len(token.key_ids()) == 1
    finally:
        ca.stop()


def test_a_symlinked_pin_file_is_refused_when_it_is_set(tmp_path: Path,
                                                        token: softhsm.Token) -> None:
    from swcmp.checks import check_setting_files

    link = tmp_path / "pin-link"
    link.symlink_to(token.pin_file)
    session = Session(name="gw1", key=token.uri(), pkcs11_module=token.module, pin_file=link)
    with pytest.raises(ConfigError, match="cannot read the PIN file"):
        check_setting_files(session, ["pin_file"], Paths(tmp_path, tmp_path, tmp_path))


def test_a_token_that_cannot_be_opened_does_not_stop_the_stale_key_cleanup(
        tmp_path: Path) -> None:
    from swcmp.service import RenewalService
    from swcmp.strongswan import ViciCharon, stale_keys_file

    paths = Paths(tmp_path / "etc", tmp_path / "var", tmp_path / "swanctl")
    notlib = tmp_path / "not-a-module.so"
    notlib.write_text("x")
    pin = tmp_path / "pin"
    pin.write_text("1234")
    pin.chmod(0o600)
    store = SessionStore(paths.config_dir)
    store.create("tok", {"entity": "CN=tok", "key": "pkcs11:token=gw;object=tok",
                         "pkcs11_module": str(notlib), "pin_file": str(pin)})
    store.create("filekey", {"entity": "CN=filekey"})
    paths.cert_file("tok").parent.mkdir(parents=True)
    pki = make_pki(tmp_path / "pki")
    paths.cert_file("tok").write_bytes(pem_cert(pki.issue(ec.generate_private_key(
        ec.SECP256R1()))))
    stale = stale_keys_file(paths, "filekey")
    stale.parent.mkdir(parents=True)
    stale.write_text("[]")
    # charon is not there: the cleanup waits for it, but nothing escapes the pass
    RenewalService(paths, charon=ViciCharon("unix:///nonexistent/charon.vici", paths)
                   ).unload_stale_keys()


def test_threads_signing_with_one_token_at_once_do_not_crash_the_process(
        token: softhsm.Token) -> None:
    # serve renews different CAs' sessions on parallel threads; unserialised token
    # sessions crashed the whole process (SIGSEGV inside the PKCS#11 module)
    child = textwrap.dedent(f"""
        import threading
        from pathlib import Path
        from swcmp.cmp import keys
        from swcmp.keystore.pkcs11 import TokenConfig, TokenStore, TokenUri, new_key_id
        store = TokenStore(TokenConfig("gw1", TokenUri.parse({token.uri()!r}),
                                       Path({str(token.module)!r}),
                                       Path({str(token.pin_file)!r})))
        key = store.generate("ecdsa:p256", new_key_id())
        alg = keys.default_signature_algorithm(key)
        errors = []
        def work():
            for _ in range(60):
                try:
                    key.sign(b"x" * 100, alg)
                except Exception as e:
                    errors.append(repr(e))
        threads = [threading.Thread(target=work) for _ in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(len(errors), errors[:2])
    """)
    res = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                         timeout=120)  # inherits SOFTHSM2_CONF from the fixture
    assert res.returncode == 0, (res.returncode, res.stderr[-1000:])
    assert res.stdout.startswith("0 "), res.stdout
