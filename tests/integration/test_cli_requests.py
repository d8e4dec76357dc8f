"""`swcmp request`, `stats` and `status` against OpenSSL's CMP mock servers, each test
once with OpenSSL 3.0's (the machine's) and once with 3.5's (Debian 13's).

The 3.0 mock answers every request with the fixed `-rsp_cert`, so each test
makes the session's key first and issues `-rsp_cert` for it; for a KUR the
certificate carries the issuer and serial of the one being updated (see
SPEC.md, "Facts about the test peers").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from openssl_gateway import GW, MAC_ARGS, SECRET, SIG_ARGS, Gateway
from openssl_mock import OPENSSL, OpenSSL
from pki import make_pki, pem_cert

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed"),
]

@pytest.fixture
def gw(tmp_path: Path, openssl_peer: OpenSSL) -> Gateway:
    return Gateway(tmp_path, openssl_peer)


def test_ir_with_mac_then_checks_pass_then_kur(gw: Gateway) -> None:
    issued = gw.pki.issue(gw.key, GW)
    with gw.ca(MAC_ARGS, issued) as url:
        gw.create_session(url)
        # Before the IR the certificate items are pending (no failure), and auto-update is
        # refused until they pass.
        assert gw.run("--vici", "none", "session", "check", "gw1").exit_code == 0
        assert gw.run("--vici", "none", "session", "enable-auto-update", "gw1").exit_code == 1

        result = gw.run("--json", "request", "initial", "gw1")  # charon absent: files only
        assert result.exit_code == 0, result.output
    ir = json.loads(result.stdout)
    assert ir["session"] == "gw1" and ir["action"] == "ir" and ir["ok"] is True
    assert ir["serial"] == f"{issued.serial_number:x}"
    assert ir["cert_path"] == str(gw.cert_file)
    assert ir["key_path"] == str(gw.swanctl_dir / "private" / "gw1.key")
    assert ir["ca_paths"] == [str(gw.swanctl_dir / "x509ca" / "gw1-ca1.crt")]
    assert "charon not updated" in ir["charon"]
    assert "charon not updated" not in result.stderr  # said once: in the result
    assert x509.load_pem_x509_certificate(gw.cert_file.read_bytes()) == issued

    # After the IR every check passes (no charon here: --vici none) and enabling works.
    check = gw.json("--vici", "none", "session", "check", "gw1")
    assert check["ok"] is True, [c for c in check["checks"] if not c["ok"]]
    enabled = gw.run("--vici", "none", "session", "enable-auto-update", "gw1")
    assert enabled.exit_code == 0, enabled.output

    stats = gw.json("stats", "gw1")["sessions"][0]["stats"]
    assert stats["ir"] == {"sent": 1, "received": 1, "failed": 0}
    status = gw.json("status", "gw1")["sessions"][0]
    assert status["state"] == "idle" and status["auto_update"] is True
    assert status["certificate"]["serial"] == ir["serial"]
    assert status["last_result"]["action"] == "ir" and status["last_result"]["ok"] is True
    assert status["next_renewal"] is not None

    # KUR, same key: the mock needs the old certificate's issuer and serial.
    renewed = gw.pki.issue(gw.key, GW, serial=issued.serial_number, days=400)
    with gw.ca(SIG_ARGS, renewed):
        kur = gw.run("request", "keyupdate", "gw1", "--no-deploy")
    assert kur.exit_code == 0, kur.output
    assert kur.stdout.startswith("kur for session gw1: renewed: ")
    current = x509.load_pem_x509_certificate(gw.cert_file.read_bytes())
    assert current == renewed
    assert current.not_valid_after_utc > issued.not_valid_after_utc

    stats = gw.json("stats", "gw1")["sessions"][0]["stats"]
    assert stats["kur"] == {"sent": 1, "received": 1, "failed": 0}
    text = gw.run("status", "gw1").stdout
    assert "last result   kur ok" in text
    assert f"valid until {current.not_valid_after_utc:%Y-%m-%dT%H:%MZ}" in text
    assert "ir" in gw.run("stats").stdout

    reset = gw.run("stats", "reset", "gw1")
    assert reset.exit_code == 0
    assert gw.json("stats", "gw1")["sessions"][0]["stats"]["kur"]["sent"] == 0


def test_failed_kur_keeps_the_live_pair(gw: Gateway) -> None:
    issued = gw.pki.issue(gw.key, GW)
    with gw.ca(MAC_ARGS, issued) as url:
        gw.create_session(url)
        assert gw.run("request", "initial", "gw1", "--no-deploy").exit_code == 0
    live = gw.cert_file.read_bytes()
    live_key = (gw.swanctl_dir / "private" / "gw1.key").read_bytes()
    # With --regenerate a fresh key is certified, but the mock returns a certificate for the
    # old key: swcmp must refuse it and keep the live pair.
    renewed = gw.pki.issue(gw.key, GW, serial=issued.serial_number, days=400)
    with gw.ca(SIG_ARGS, renewed):
        result = gw.run("request", "keyupdate", "gw1", "--regenerate", "--no-deploy")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "\nhint: " in result.stderr
    assert "Traceback" not in result.stderr
    assert gw.cert_file.read_bytes() == live
    assert (gw.swanctl_dir / "private" / "gw1.key").read_bytes() == live_key
    status = gw.json("status", "gw1")["sessions"][0]
    assert status["last_result"]["action"] == "kur" and status["last_result"]["ok"] is False


def test_ir_with_wrong_secret_is_a_clear_error(gw: Gateway) -> None:
    issued = gw.pki.issue(gw.key, GW)
    args = ["-srv_ref", "1234", "-srv_secret", "pass:another-secret"]
    with gw.ca(args, issued) as url:
        gw.create_session(url)
        before = sorted(p.name for p in gw.swanctl_dir.rglob("*"))
        result = gw.run("request", "initial", "gw1", "--no-deploy")
        as_json = gw.json("request", "initial", "gw1", "--no-deploy", code=1)
    assert result.exit_code == 1
    first, second = result.stderr.splitlines()[-2:]
    assert first.startswith("error: ") and second.startswith("hint: ")
    assert set(as_json) == {"error", "hint", "code"} and as_json["code"] == "ca_error"
    assert sorted(p.name for p in gw.swanctl_dir.rglob("*")) == before  # no certificate
    assert not gw.cert_file.exists()
    stats = gw.json("stats", "gw1")["sessions"][0]["stats"]
    assert stats["ir"]["sent"] == 2
    status = gw.json("status", "gw1")["sessions"][0]
    assert status["last_result"]["ok"] is False and status["state"] == "needs_ir"


def test_keyupdate_without_certificate_needs_ir(gw: Gateway) -> None:
    gw.create_session("http://127.0.0.1:9/pkix/")
    result = gw.run("request", "keyupdate", "gw1", "--no-deploy")
    assert result.exit_code == 1
    assert "error: session gw1 has no certificate yet" in result.stderr
    assert "hint: run `swcmp request initial gw1`" in result.stderr


def test_cr_signed_with_the_session_certificate(gw: Gateway) -> None:
    issued = gw.pki.issue(gw.key, GW)
    with gw.ca(MAC_ARGS, issued) as url:
        gw.create_session(url)
        assert gw.run("request", "initial", "gw1", "--no-deploy").exit_code == 0
    second = gw.pki.issue(gw.key, GW, days=200)
    with gw.ca(SIG_ARGS, second):
        result = gw.json("request", "certificate", "gw1", "--no-deploy")
    assert result["action"] == "cr" and result["serial"] == f"{second.serial_number:x}"
    assert gw.json("stats", "gw1")["sessions"][0]["stats"]["cr"]["received"] == 1


def test_ir_in_a_real_subprocess(gw: Gateway) -> None:
    issued = gw.pki.issue(gw.key, GW)
    env = dict(
        os.environ,
        SWCMP_CONFIG_DIR=str(gw.config_dir),
        SWCMP_STATE_DIR=str(gw.state_dir),
        SWCMP_SWANCTL_DIR=str(gw.swanctl_dir),
        SWCMP_VICI="none",
    )
    with gw.ca(MAC_ARGS, issued) as url:
        gw.create_session(url)
        proc = subprocess.run(
            [sys.executable, "-m", "swcmp", "request", "initial", "gw1"],
            capture_output=True, text=True, env=env, check=False, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ir for session gw1: certificate")
    assert "not loaded into charon" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr
    enabled = subprocess.run(
        [sys.executable, "-m", "swcmp", "session", "enable-auto-update", "gw1"],
        capture_output=True, text=True, env=env, check=False, timeout=60,
    )  # fmt: skip
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    status = subprocess.run(
        [sys.executable, "-m", "swcmp", "--json", "status"],
        capture_output=True, text=True, env=env, check=False, timeout=60,
    )  # fmt: skip
    entry = json.loads(status.stdout)["sessions"][0]
    assert entry["certificate"]["serial"] == f"{issued.serial_number:x}"
    assert entry["state"] == "idle"


def test_renew_pass_skips_what_is_not_due_and_forces_a_kur(gw: Gateway) -> None:
    issued = gw.pki.issue(gw.key, GW)
    with gw.ca(MAC_ARGS, issued) as url:
        gw.create_session(url)
        assert gw.run("request", "initial", "gw1", "--no-deploy").exit_code == 0
    assert gw.run("--vici", "none", "session", "enable-auto-update", "gw1").exit_code == 0
    due = gw.json("renew", "--due", "--no-deploy")
    assert [(r["session"], r["result"]) for r in due["results"]] == [("gw1", "skipped")]
    assert due["results"][0]["renew_at"] is not None
    with gw.ca(SIG_ARGS, issued):  # the dry run asks the CA (a signed genm)
        dry = gw.run("renew", "--force", "--dry-run", "gw1")
    assert dry.exit_code == 0 and dry.stdout.startswith("gw1: dry-run: would renew")
    assert "CA check passed" in dry.stdout
    assert gw.cert_file.read_bytes() == pem_cert(issued)

    renewed = gw.pki.issue(gw.key, GW, serial=issued.serial_number, days=400)
    with gw.ca(SIG_ARGS, renewed):
        forced = gw.run("renew", "--force", "--no-deploy", "gw1")
    assert forced.exit_code == 0, forced.output
    assert forced.stdout.startswith("gw1: renewed: ")
    assert gw.cert_file.read_bytes() == pem_cert(renewed)
    # The CA is gone now: a forced renewal fails with exit code 1.
    failed = gw.run("renew", "--force", "--no-deploy", "gw1")
    assert failed.exit_code == 1 and failed.stdout.startswith("gw1: failed: ")


def test_charon_start_hook_without_charon(gw: Gateway) -> None:
    gw.create_session("http://127.0.0.1:9/pkix/")
    result = gw.run("hook", "charon-start")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "not reachable" in result.stderr
    none = gw.run("--vici", "none", "hook", "charon-start")
    assert none.exit_code == 1 and "needs charon" in none.stderr


def test_ir_whose_certificate_chains_only_to_a_capubs_root_is_not_committed(
        gw: Gateway, tmp_path: Path) -> None:
    # OpenSSL's mock sends its root in caPubs (MAC-protected); the session trusts
    # another root: the certificate does not chain to the configured anchor
    other = make_pki(tmp_path / "other-pki")
    issued = gw.pki.issue(gw.key, GW)
    with gw.ca(MAC_ARGS, issued) as url:
        gw.create_session(url)
        assert gw.run("session", "set", "gw1", "--trust",
                      str(other.dir / "root.crt")).exit_code == 0
        result = gw.run("request", "initial", "gw1", "--no-deploy")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr and result.stderr.startswith("error: ")
    assert not gw.cert_file.exists()
    assert not list((gw.swanctl_dir / "x509ca").glob("gw1-*")) \
        if (gw.swanctl_dir / "x509ca").exists() else True
    assert gw.json("session", "show", "gw1")["trust"] == [str(other.dir / "root.crt")]


def test_delayed_delivery_of_every_message_through_the_cli(tmp_path: Path) -> None:
    """OpenSSL 3.5's mock with -poll_count delays the ip, the pkiConf, the genp and the rp
    (RFC 9483 4.4): `swcmp request initial`, `cacerts` and `revoke` wait them out."""
    gw = Gateway(tmp_path, OpenSSL.of("3.5"))
    issued = gw.pki.issue(gw.key, GW)
    delayed = ["-poll_count", "1", "-check_after", "1"]
    with gw.ca([*MAC_ARGS, *delayed], issued) as url:
        gw.create_session(url)
        ir = gw.json("request", "initial", "gw1", "--no-deploy")
        assert ir["serial"] == f"{issued.serial_number:x}"
    stats = gw.json("stats", "gw1")["sessions"][0]["stats"]
    assert stats["ir"] == {"sent": 1, "received": 1, "failed": 0}
    assert stats["certConf"]["sent"] == 1
    assert stats["pollReq"]["sent"] == 2  # one for the ip, one for the pkiConf
    assert x509.load_pem_x509_certificate(gw.cert_file.read_bytes()) == issued

    # caCerts and rr, signed with the new certificate; the mock expects it in the rr
    gw.pki.write("ref.crt", pem_cert(issued))
    with gw.ca([*SIG_ARGS, *delayed, "-ref_cert", "ref.crt"], issued):
        cacerts = gw.json("request", "cacerts", "gw1", "--no-deploy")
        assert cacerts["ok"] is True, cacerts
        revoked = gw.json("request", "revoke", "gw1", "--reason", "superseded", "--yes")
        assert revoked["ok"] is True, revoked
    stats = gw.json("stats", "gw1")["sessions"][0]["stats"]
    assert stats["pollReq"]["sent"] == 4


def test_request_crl_asks_crl_status_list_then_remembers_a_ca_without_it(
        gw: Gateway) -> None:
    """`swcmp request crl`: OpenSSL 3.5's mock answers crlStatusList (RFC 9483 4.3.4) with
    its -rsp_crl; 3.0's does not know it, so swcmp asks currentCRL and remembers that."""
    import datetime as dt

    from cryptography.hazmat.primitives import hashes, serialization

    issued = gw.pki.issue(gw.key, GW)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(gw.pki.root.subject)
           .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=1))
           .sign(gw.pki.root_key, hashes.SHA256()))  # type: ignore[arg-type]
    gw.pki.write("crl.pem", crl.public_bytes(serialization.Encoding.PEM))
    newer = gw.openssl is not None and gw.openssl.newer
    extra = ["-rsp_crl", "crl.pem"] if newer else []
    with gw.ca(MAC_ARGS, issued) as url:
        gw.create_session(url)
        assert gw.run("request", "initial", "gw1", "--no-deploy").exit_code == 0
    with gw.ca([*SIG_ARGS, *extra], issued):  # genm signed with the new certificate
        first = gw.json("request", "crl", "gw1", "--no-deploy")
        second = gw.json("request", "crl", "gw1", "--no-deploy")
    genm = gw.json("stats", "gw1")["sessions"][0]["stats"]["genm"]["sent"]
    unsupported = set(gw.json("status", "gw1")["sessions"][0]["ca"]["unsupported"])
    crl_file = gw.swanctl_dir / "x509crl" / "gw1.crl"
    if newer:
        assert first["ok"] is True and "stored" in first["message"], first
        assert x509.load_der_x509_crl(crl_file.read_bytes()) == crl
        # asked again with the stored CRL's thisUpdate: the mock still sends its CRL
        # (it does not compare), which is not older, so it is taken again
        assert second["ok"] is True, second
        assert genm == 2 and "crlStatusList" not in unsupported
    else:
        assert first["changed"] is False and "no CRL" in first["message"], first
        # the IR's certReqTemplate (3.0's mock echoes it without a value: no template),
        # crlStatusList once (remembered as unknown), currentCRL twice
        assert genm == 4
        assert "crlStatusList" in unsupported, unsupported
        assert not crl_file.exists()


def test_trace_writes_every_request_and_answer_as_der(tmp_path: Path) -> None:
    """`--trace DIR` on `request` and `renew`: each message in the order it crossed the
    wire, as DER that decodes, 0600, and no MAC secret in any of them."""
    from swcmp.cmp import codec

    gw = Gateway(tmp_path)
    issued = gw.pki.issue(gw.key, GW)
    trace = tmp_path / "trace"
    with gw.ca(MAC_ARGS, issued) as url:
        gw.create_session(url)
        assert gw.run("request", "initial", "gw1", "--no-deploy",
                      "--trace", str(trace)).exit_code == 0
    files = sorted(trace.iterdir())
    assert [f.name.rsplit("-", 1)[1] for f in files] == [
        "request.der", "answer.der"] * 3  # genm certReqTemplate, ir, certConf
    kinds = [codec.decode_message(f.read_bytes()).body_type for f in files]
    assert kinds == ["genm", "genp", "ir", "ip", "certConf", "pkiconf"]
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    assert trace.stat().st_mode & 0o777 == 0o700
    assert not any(SECRET.encode() in f.read_bytes() for f in files)

    renewed = gw.pki.issue(gw.key, GW, serial=issued.serial_number, days=400)
    with gw.ca(SIG_ARGS, renewed):
        forced = gw.run("renew", "--force", "--no-deploy", "--trace", str(trace), "gw1")
    assert forced.exit_code == 0, forced.output
    kinds = [codec.decode_message(f.read_bytes()).body_type for f in sorted(trace.iterdir())]
    # the same key is certified again: no template question; then caCerts, as always
    assert kinds[6:10] == ["kur", "kup", "certConf", "pkiconf"]


@pytest.mark.parametrize("setting", ["check", "accept", "reject"])
def test_granted_with_mods(tmp_path: Path, setting: str) -> None:
    """A certificate the CA granted with modifications (`-pkistatus 1`): `check` takes it
    when subject, SANs and key are as asked and refuses one with another subject, saying
    what changed; `accept` takes both (logged); `reject` refuses both in certConf."""
    gw = Gateway(tmp_path)
    same = gw.pki.issue(gw.key, GW)
    renamed = gw.pki.issue(gw.key, "other.example.net")
    with gw.ca(MAC_ARGS, same) as url:
        gw.create_session(url)
        assert gw.run("session", "set", "gw1", "--granted-with-mods", setting).exit_code == 0
        assert gw.json("session", "show", "gw1")["granted_with_mods"] == setting
    for issued, ok in ((same, setting != "reject"), (renamed, setting == "accept")):
        with gw.ca([*MAC_ARGS, "-pkistatus", "1"], issued):
            result = gw.run("request", "initial", "gw1", "--no-deploy", "--yes")
        assert (result.exit_code == 0) is ok, result.output
        if ok:
            assert "granted with modifications" in result.stderr
            assert x509.load_pem_x509_certificate(gw.cert_file.read_bytes()) == issued
        else:
            assert "granted the ir with modifications" in result.stderr, result.stderr
            assert "granted_with_mods setting is " + setting in result.stderr
            if issued is renamed:
                assert "subject /CN=other.example.net" in result.stderr
                assert "'CN=" not in result.stderr  # one DN form: the slash form
            assert not gw.cert_file.exists() or gw.cert_file.read_bytes() != pem_cert(issued)
    stats = gw.json("stats", "gw1")["sessions"][0]["stats"]
    assert stats["certConf"]["sent"] == 2  # a refusal is told to the CA in certConf too


def test_request_template_against_the_openssl_mocks(gw: Gateway) -> None:
    """genm certReqTemplate (RFC 9483 4.3.3): OpenSSL 3.0's mock echoes the question
    without a value, which is "no template" (nothing remembered, the IR goes on); 3.5's
    mock ends its process on the question (its own client gets no answer either), which
    is why its sessions are made with --no-ask-template (openssl_gateway.py)."""
    issued = gw.pki.issue(gw.key, GW)
    with gw.ca(MAC_ARGS, issued) as url:
        gw.create_session(url)
        if gw.openssl is not None and gw.openssl.newer:
            first = gw.json("request", "template", "gw1", code=1)
            assert "closed the connection" in first["hint"], first
            gone = gw.json("request", "template", "gw1", code=1)
            assert gone["code"] == "connect", gone  # the mock is no more
            return
        shown = gw.json("request", "template", "gw1")
        assert shown["known"] is True and shown["template"]["offered"] is False, shown
        assert gw.json("request", "initial", "gw1", "--no-deploy")["ok"] is True
    stats = gw.json("stats", "gw1")["sessions"][0]["stats"]
    assert stats["genm"]["sent"] == 2  # asked again before the IR: no template is no refusal
    assert "certReqTemplate" not in gw.json("status", "gw1")["sessions"][0]["ca"].get(
        "unsupported", {})


def test_a_template_question_refused_with_the_request_is_not_remembered(
        tmp_path: Path) -> None:
    """A CA that refuses the template question with a protected error is remembered as not
    knowing it only once it takes the request that follows. OpenSSL 3.0's mock whose trust
    store no longer holds the gateway's root refuses every signed message, the template
    question first (its protected error, badRequest): that refusal says nothing about the
    question. Remembered, the template would not be asked for 30 days; it is asked again
    by the next key update."""
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives.asymmetric import ec

    from pki import make_cert, name

    gw = Gateway(tmp_path)
    first = gw.pki.issue(gw.key, GW)
    with gw.ca(MAC_ARGS, first) as url:
        gw.create_session(url)
        assert gw.json("request", "initial", "gw1", "--no-deploy")["ok"] is True
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = make_cert(name("another root"), other_key.public_key(), other_key, ca=True,
                      not_before=datetime.now(UTC) - timedelta(days=1))
    gw.pki.write("other.crt", pem_cert(other))
    renewed = gw.pki.issue(gw.key, GW, serial=first.serial_number, days=400)
    untrusting = ["-srv_cert", "srv.crt", "-srv_key", "srv.key", "-srv_trusted", "other.crt"]
    with gw.ca(untrusting, renewed):
        refused = gw.json("request", "keyupdate", "gw1", "--regenerate", "--no-deploy",
                          code=1)
        assert "badRequest" in refused["error"], refused
    unsupported = gw.json("status", "gw1")["sessions"][0]["ca"].get("unsupported", {})
    assert "certReqTemplate" not in unsupported, unsupported
    sent = gw.json("stats", "gw1")["sessions"][0]["stats"]["genm"]["sent"]
    with gw.ca(SIG_ARGS, renewed):
        gw.run("request", "keyupdate", "gw1", "--regenerate", "--no-deploy")
    assert gw.json("stats", "gw1")["sessions"][0]["stats"]["genm"]["sent"] == sent + 1
