"""The CA's own life through the CLI against the embedded test CA (no charon: files only).

CA certificates (genm caCerts), a root rollover (``swcmp testca rollover`` at the CA, then
``swcmp request rootca``), revocation (rr, ``--revoke-superseded``, ``session delete
--revoke``), CRLs (genm currentCRL) and the faults a client must refuse: a caCerts
certificate that does not chain, a newWithOld the current root did not sign, a CRL
signed by someone else. The CA runs in this process; each gateway has its own
directories. The charon side (both roots loaded, CRL enforced) is in
test_e2e_calife.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography import x509

from swcmp.calife import CaLife, CaLifeStore, crl_file, root_cert_files
from swcmp.cli import cli
from swcmp.cli.render import format_serial
from swcmp.cmp import certs
from swcmp.errors import ConnectError
from swcmp.names import format_dn
from swcmp.store import load_trust
from swcmp.testca.state import REVOKED
from testca_site import MAC_REF, MAC_SECRET, CAHolder, Site, add_session, ca_config, make_site

pytestmark = pytest.mark.integration


@pytest.fixture
def ca(tmp_path: Path) -> Iterator[CAHolder]:
    holder = CAHolder(tmp_path / "ca", ca_config(validity=timedelta(hours=2)))
    try:
        yield holder
    finally:
        holder.stop()


def run(site: Site, *args: str, code: int | None = 0) -> Result:
    p = site.paths
    result = CliRunner().invoke(cli, ["--config-dir", str(p.config_dir), "--state-dir",
                                      str(p.state_dir), "--swanctl-dir", str(p.swanctl_dir),
                                      "--vici", "none", *args], prog_name="swcmp")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"unexpected exception {result.exception!r}\n{result.output}")
    assert MAC_SECRET not in result.output
    if code is not None:
        assert result.exit_code == code, result.output
    return result


def run_json(site: Site, *args: str, code: int = 0) -> Any:
    return json.loads(run(site, "--json", *args, code=code).stdout)


def gateway(tmp_path: Path, ca: CAHolder, name: str) -> Site:
    site = make_site(tmp_path / name)
    add_session(site, ca.ca, name, auto_update=False)
    return site


def cert_of(site: Site, name: str) -> x509.Certificate:
    return certs.load_certificate(site.paths.cert_file(name).read_bytes())


def x509ca_bytes(site: Site) -> dict[str, bytes]:
    d = site.paths.x509ca_dir
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())} if d.exists() else {}


def rollover(ca: CAHolder) -> None:
    result = CliRunner().invoke(cli, ["testca", "rollover", "--dir", str(ca.directory)],
                                prog_name="swcmp")
    assert result.exit_code == 0, result.output
    assert "new root" in result.output


# ---------------------------------------------------------------------- caCerts, rr, CRL


def test_cacerts_revoke_and_crl(tmp_path: Path, ca: CAHolder) -> None:
    a, b = gateway(tmp_path, ca, "gwa"), gateway(tmp_path, ca, "gwb")
    got = run_json(a, "request", "cacerts", "gwa")
    assert got["ok"] is True and got["changed"] is False, got  # the IR stored the CA already
    b_serial = cert_of(b, "gwb").serial_number
    revoked = run_json(b, "request", "revoke", "gwb", "--reason", "keyCompromise", "--yes")
    assert "keyCompromise" in revoked["message"], revoked
    rec = ca.ca.certificate(b_serial)
    assert rec is not None and rec.status == REVOKED and rec.reason_code == 1
    # A fetches the CRL: B's serial is on it, signed by the CA both gateways trust.
    crl_got = run_json(a, "request", "crl", "gwa")
    assert crl_got["changed"] is True, crl_got
    crl = x509.load_der_x509_crl(crl_file(a.paths, "gwa").read_bytes())
    assert crl.is_signature_valid(ca.ca.ca_cert.public_key())  # type: ignore[arg-type]
    entry = crl.get_revoked_certificate_by_serial_number(b_serial)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.key_compromise
    assert crl.get_revoked_certificate_by_serial_number(cert_of(a, "gwa").serial_number) is None
    text = run(a, "status", "gwa").stdout
    assert "CRL" in text and "1 revoked" in text, text
    # B's key update is refused by the CA now, and status says why
    result = run(b, "request", "keyupdate", "gwb", code=None)
    assert result.exit_code != 0 and "certRevoked" in result.output, result.output
    status = run(b, "status", "gwb").stdout
    assert f"serial {format_serial(b_serial)} was revoked (keyCompromise)" in status, status
    check = run_json(b, "session", "check", "gwb", code=1)
    item = next(c for c in check["checks"] if c["name"] == "ca-roots")
    assert item["level"] == "fail" and "request initial" in item["fix"], item


def test_session_delete_revoke_decommissions(tmp_path: Path, ca: CAHolder) -> None:
    a = gateway(tmp_path, ca, "gwa")
    serial = cert_of(a, "gwa").serial_number
    out = run_json(a, "session", "delete", "gwa", "--revoke")
    assert out["deleted"] is True and "cessationOfOperation" in out["revoked"], out
    rec = ca.ca.certificate(serial)
    assert rec is not None and rec.status == REVOKED and rec.reason_code == 5
    assert not a.store.exists("gwa")


def test_session_delete_revoke_keeps_the_session_when_the_ca_refuses(
        tmp_path: Path, ca: CAHolder) -> None:
    a = gateway(tmp_path, ca, "gwa")
    run_json(a, "request", "revoke", "gwa", "--yes")
    result = run(a, "session", "delete", "gwa", "--revoke", code=None)
    assert result.exit_code != 0 and "certRevoked" in result.output, result.output
    assert a.store.exists("gwa")


def test_revoke_superseded_after_kur_and_retry_after_a_failure(
        tmp_path: Path, ca: CAHolder) -> None:
    a = gateway(tmp_path, ca, "gwa")
    run(a, "session", "set", "gwa", "--revoke-superseded")
    old = cert_of(a, "gwa").serial_number
    kur = run_json(a, "request", "keyupdate", "gwa", "--regenerate")
    assert kur["ok"] is True
    rec = ca.ca.certificate(old)
    assert rec is not None and rec.status == REVOKED and rec.reason_code == 4  # superseded
    assert not CaLifeStore(a.paths, "gwa").load().pending_revocations

    # Now the CA is unreachable for the revocation after the next renewal: the renewal
    # stands, the revocation waits, and a later pass does it.
    second = cert_of(a, "gwa").serial_number
    life = CaLife(a.paths, transport=_DeadTransport())
    notes = life.after_renewal(a.session("gwa"), cert_of(a, "gwa"), "ffff")
    assert any("failed" in n and "retried later" in n for n in notes), notes
    pending = CaLifeStore(a.paths, "gwa").load().pending_revocations
    assert [p["serial"] for p in pending] == [f"{second:x}"] and pending[0]["attempts"] == 1
    assert cert_of(a, "gwa").serial_number == second  # nothing undone
    later = CaLife(a.paths, clock=lambda: _in(timedelta(minutes=6)))
    assert any("revoked" in n for n in later.retry_revocations(a.session("gwa")))
    rec = ca.ca.certificate(second)
    assert rec is not None and rec.status == REVOKED
    assert not CaLifeStore(a.paths, "gwa").load().pending_revocations


class _Crash(BaseException):
    """kill -9 at a checkpoint: nothing after it runs."""


def test_revoke_superseded_after_a_crash_once_the_certificate_was_written(
        tmp_path: Path, ca: CAHolder) -> None:
    # The run that finishes the commit is the one that knows which certificate the
    # renewal replaced: the live file already names the new one.
    from swcmp.renewal import Renewer
    from swcmp.service import RenewalService

    a = gateway(tmp_path, ca, "gwa")
    run(a, "session", "set", "gwa", "--revoke-superseded")
    old = cert_of(a, "gwa").serial_number

    def crash(phase: str) -> None:
        if phase == "cert-written":
            raise _Crash(phase)

    killed = RenewalService(a.paths)
    killed.renewer = lambda s: Renewer(a.paths, checkpoint=crash)  # type: ignore[method-assign]
    with pytest.raises(_Crash):
        killed.renew_now(a.session("gwa"), regenerate=True)
    assert cert_of(a, "gwa").serial_number != old  # the crash came after the commit point
    outcome = RenewalService(a.paths).renew_now(a.session("gwa"))
    assert outcome.ok and outcome.serial == f"{cert_of(a, 'gwa').serial_number:x}"
    rec = ca.ca.certificate(old)
    assert rec is not None and rec.status == REVOKED and rec.reason_code == 4  # superseded
    assert not CaLifeStore(a.paths, "gwa").load().pending_revocations


def test_revoke_superseded_with_a_token_key(tmp_path: Path, ca: CAHolder) -> None:
    # The key is in a SoftHSM2 token: the replaced pair stays in the token until the
    # revocation of its certificate, signed with it, is done; then a pass destroys it.
    import softhsm

    if softhsm.unavailable() is not None:
        pytest.skip(softhsm.unavailable() or "")
    token = softhsm.new_token(tmp_path)
    a = make_site(tmp_path / "gwa")
    cn = "gwa.example.net"
    run(a, "session", "create", "gwa", "--entity", f"CN={cn}", "--san", f"DNS:{cn}",
        "--ca-name", format_dn(ca.ca.ca_cert.subject), "--server-url", ca.ca.url,
        "--mac-ref", MAC_REF, "--mac-secret-file", str(a.secret_file), "--key", token.uri(),
        "--pkcs11-module", str(token.module), "--pin-file", str(token.pin_file),
        "--revoke-superseded")
    assert run_json(a, "request", "initial", "gwa")["ok"] is True
    old = cert_of(a, "gwa").serial_number
    (old_object,) = token.key_ids()
    kur = run_json(a, "request", "keyupdate", "gwa", "--regenerate")
    assert kur["ok"] is True
    rec = ca.ca.certificate(old)
    assert rec is not None and rec.status == REVOKED and rec.reason_code == 4  # superseded
    assert not CaLifeStore(a.paths, "gwa").load().pending_revocations
    assert old_object in token.key_ids()  # collected by the next pass, not before
    run(a, "renew", "gwa")
    assert old_object not in token.key_ids() and len(token.key_ids()) == 1


def test_session_delete_revoke_removes_a_token_sessions_secrets(
        tmp_path: Path, ca: CAHolder) -> None:
    # conf.d/swcmp-NAME.conf holds the token's PIN and makes `swanctl --load-creds`
    # load the revoked certificate's key again: decommissioning removes it.
    import softhsm
    from swcmp.keystore.token_checks import secrets_file

    if softhsm.unavailable() is not None:
        pytest.skip(softhsm.unavailable() or "")
    token = softhsm.new_token(tmp_path)
    a = make_site(tmp_path / "gwa")
    cn = "gwa.example.net"
    run(a, "session", "create", "gwa", "--entity", f"CN={cn}", "--san", f"DNS:{cn}",
        "--ca-name", format_dn(ca.ca.ca_cert.subject), "--server-url", ca.ca.url,
        "--mac-ref", MAC_REF, "--mac-secret-file", str(a.secret_file), "--key", token.uri(),
        "--pkcs11-module", str(token.module), "--pin-file", str(token.pin_file))
    assert run_json(a, "request", "initial", "gwa")["ok"] is True
    secrets = secrets_file(a.paths, a.store.load("gwa"))
    assert secrets.exists()
    serial = cert_of(a, "gwa").serial_number
    out = run_json(a, "session", "delete", "gwa", "--revoke")
    assert str(secrets) in out["removed"], out
    assert not secrets.exists()
    rec = ca.ca.certificate(serial)
    assert rec is not None and rec.status == REVOKED


class _DeadTransport:
    def post(self, data: bytes) -> bytes:
        raise ConnectError("connection refused (test)", url="http://127.0.0.1:9/")


def _in(delta: timedelta) -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC) + delta


# ---------------------------------------------------------------------- root rollover


def test_rollover_then_renewal_from_the_new_root(tmp_path: Path, ca: CAHolder) -> None:
    a, b = gateway(tmp_path, ca, "gwa"), gateway(tmp_path, ca, "gwb")
    old_root = ca.ca.ca_cert
    assert run_json(a, "request", "rootca", "gwa")["changed"] is False  # nothing announced
    rollover(ca)
    got = run_json(a, "request", "rootca", "gwa")
    assert got["changed"] is True, got
    new_root = certs.load_certificate((ca.directory / "ca.crt").read_bytes())
    assert new_root.subject == old_root.subject and new_root != old_root
    roots = {certs.der_of(c) for p in root_cert_files(a.paths, "gwa")
             for c in [certs.load_certificate(p.read_bytes())]}
    assert roots == {certs.der_of(old_root), certs.der_of(new_root)}
    anchors = load_trust(a.session("gwa"))
    assert old_root in anchors and new_root in anchors
    # asked again with the new root: no update
    assert run_json(a, "request", "rootca", "gwa")["changed"] is False
    # A renews: the CA issues with the new key now
    assert run_json(a, "request", "keyupdate", "gwa", "--regenerate")["ok"] is True
    cert_of(a, "gwa").verify_directly_issued_by(new_root)
    # B has not renewed: its old-root certificate still chains in A's trust
    certs.build_chain(cert_of(b, "gwb"), anchors=load_trust(a.session("gwa")),
                      now=_in(timedelta(0)))
    # caCerts now brings the new root (A's own certificate no longer needs the old one:
    # the answer is taken as it is, beside the anchor file the IR made).
    cacerts = run_json(a, "request", "cacerts", "gwa")
    assert cacerts["ok"] is True, cacerts
    stored = [certs.load_certificate(p.read_bytes()) for p in a.paths.ca_cert_files("gwa")]
    assert new_root in stored
    assert old_root in load_trust(a.session("gwa"))  # the anchor file was not rewritten
    # B's key update (signed with its old-root certificate) is answered by the new key:
    # B takes the rollover first, then renews.
    assert run_json(b, "request", "rootca", "gwb")["changed"] is True
    assert run_json(b, "request", "keyupdate", "gwb")["ok"] is True
    cert_of(b, "gwb").verify_directly_issued_by(new_root)
    status = run_json(a, "status", "gwa")["sessions"][0]["ca"]
    assert status["rollover"]["state"] == "both roots trusted"
    assert len(status["roots"]) == 2
    text = run(a, "status", "gwa").stdout
    assert "root rollover" in text and text.count("  root ") >= 2, text


def test_a_renewal_refused_after_a_rollover_asks_for_the_root_update(
        tmp_path: Path, ca: CAHolder) -> None:
    # The CA rolled over before the session's weekly root CA update: it issues from the
    # new root, which the session does not trust yet. The refused renewal asks for the
    # root update at once (a session whose renewals fail is left out of the CA-life
    # pass: without this it stayed refused until its certificate expired).
    a = gateway(tmp_path, ca, "gwa")
    rollover(ca)
    new_root = certs.load_certificate((ca.directory / "ca.crt").read_bytes())
    first = run(a, "renew", "gwa", "--force", code=1)
    assert "does not chain" in first.output, first.output
    assert new_root in load_trust(a.session("gwa"))  # the root update came with it
    assert run_json(a, "renew", "gwa", "--force")["results"][0]["result"] == "renewed"
    cert_of(a, "gwa").verify_directly_issued_by(new_root)


def test_old_root_dropped_after_it_expires(tmp_path: Path, ca: CAHolder) -> None:
    a = gateway(tmp_path, ca, "gwa")
    rollover(ca)
    run_json(a, "request", "rootca", "gwa")
    roll = CaLifeStore(a.paths, "gwa").load().rollover
    assert roll is not None
    from datetime import datetime

    after = datetime.fromisoformat(roll["old_not_after"]) + timedelta(seconds=1)
    life = CaLife(a.paths, clock=lambda: after)
    msg = life.drop_expired_roots(a.session("gwa"))
    assert msg is not None and "dropped" in msg
    assert not Path(roll["old_file"]).exists()
    assert roll["old_file"] not in [str(p) for p in a.session("gwa").trust]
    assert Path(roll["new_file"]).exists()
    assert CaLifeStore(a.paths, "gwa").load().rollover["state"] == "done"  # type: ignore[index]


def test_maintain_then_next_due_reads_state_again_only_after_a_change(
        tmp_path: Path, ca: CAHolder) -> None:
    """serve's pass asks both at once: the answer is next_due's, before and after the
    pass changed the state (here: a rollover's old root dropped once it expired)."""
    from datetime import UTC, datetime

    a = gateway(tmp_path, ca, "gwa")
    now = datetime.now(UTC).replace(microsecond=0)
    CaLife(a.paths, clock=lambda: now).maintain(a.session("gwa"))  # the weekly questions
    old_until = now + timedelta(minutes=10)
    with CaLifeStore(a.paths, "gwa").update() as st:
        st.rollover = {"state": "both", "old_not_after": old_until.isoformat()}
    life = CaLife(a.paths, clock=lambda: now + timedelta(minutes=5))
    notes, t = life.maintain_then_next_due(a.session("gwa"))
    assert (notes, t) == ([], old_until)  # nothing to do: the rollover's end comes first
    assert t == life.next_due(a.session("gwa"))
    late = CaLife(a.paths, clock=lambda: old_until + timedelta(seconds=1))
    notes, t = late.maintain_then_next_due(a.session("gwa"))
    assert len(notes) == 1 and "dropped" in notes[0], notes
    assert CaLifeStore(a.paths, "gwa").load().rollover == {"state": "done",
                                                           "old_not_after": old_until.isoformat()}
    assert t is not None and t > old_until and t == late.next_due(a.session("gwa"))


# ---------------------------------------------------------------------- faults


def test_cacerts_that_do_not_chain_are_refused(tmp_path: Path, ca: CAHolder) -> None:
    a = gateway(tmp_path, ca, "gwa")
    before = x509ca_bytes(a)
    ca.restart(ca_config(validity=timedelta(hours=2), fault="foreign-ca-cert"))
    result = run(a, "request", "cacerts", "gwa", code=None)
    assert result.exit_code != 0
    assert "caCerts answer refused" in result.output and "does not chain" in result.output, \
        result.output
    assert "nothing was stored" in result.output
    assert x509ca_bytes(a) == before
    # swcmp refused it, the CA did not refuse the question: it is asked again next time
    st = CaLifeStore(a.paths, "gwa").load()
    assert "caCerts" not in st.unsupported and "caCerts" in st.last_error


def test_new_with_old_that_does_not_verify_is_refused(tmp_path: Path, ca: CAHolder) -> None:
    a = gateway(tmp_path, ca, "gwa")
    trust = a.session("gwa").trust
    before = x509ca_bytes(a)
    rollover(ca)
    ca.restart(ca_config(validity=timedelta(hours=2), fault="bad-new-with-old"))
    result = run(a, "request", "rootca", "gwa", code=None)
    assert result.exit_code != 0
    assert "newWithOld is not signed by the current root" in result.output, result.output
    assert x509ca_bytes(a) == before and a.session("gwa").trust == trust
    assert CaLifeStore(a.paths, "gwa").load().rollover is None


def test_crl_signed_by_someone_else_is_refused(tmp_path: Path, ca: CAHolder) -> None:
    a = gateway(tmp_path, ca, "gwa")
    ca.restart(ca_config(validity=timedelta(hours=2), fault="foreign-crl"))
    result = run(a, "request", "crl", "gwa", code=None)
    assert result.exit_code != 0
    assert "signed by someone else" in result.output, result.output
    assert not crl_file(a.paths, "gwa").exists()
    assert CaLifeStore(a.paths, "gwa").load().crl is None
    # with the CA's own CRL stored, a foreign one leaves it as it is
    ca.restart(ca_config(validity=timedelta(hours=2)))
    run(a, "request", "crl", "gwa")
    stored, state = crl_file(a.paths, "gwa").read_bytes(), CaLifeStore(a.paths, "gwa").load().crl
    ca.restart(ca_config(validity=timedelta(hours=2), fault="foreign-crl"))
    assert run(a, "request", "crl", "gwa", code=None).exit_code != 0
    assert crl_file(a.paths, "gwa").read_bytes() == stored
    assert CaLifeStore(a.paths, "gwa").load().crl == state


def test_request_initial_ends_the_failures_of_the_renewals_before_it(
        tmp_path: Path, ca: CAHolder) -> None:
    # The certificate expired after failed renewals (needs_ir, 4 failures, a retry
    # planned); the operator enrols again. The failures were kept: SwcmpRenewalsFailing
    # fired on and status said needs_ir with a fresh certificate in place.
    from swcmp.state import StateStore

    a = gateway(tmp_path, ca, "gwa")
    with StateStore(a.paths).update("gwa") as st:
        st.failures, st.state, st.next_attempt = 4, "needs_ir", "2099-01-01T00:00:00+00:00"
    run(a, "request", "initial", "gwa", "--yes")
    got = run_json(a, "status", "gwa")["sessions"][0]
    assert got["failures"] == 0 and got["next_attempt"] is None, got
    assert got["state"] not in ("needs_ir", "failed"), got


def test_a_question_refused_for_the_message_is_not_remembered_as_unknown(
        tmp_path: Path, ca: CAHolder) -> None:
    """With this host's clock an hour off, the CA refuses every message (its protected
    error, failInfo badTime): crlStatusList and currentCRL are not remembered as questions
    the CA does not know (that stopped CRL fetches for 30 days after NTP was fixed); they
    back off like a CA out of reach, and with the clock right the CRL comes at once."""
    from datetime import UTC, datetime

    from swcmp.errors import CMPErrorResponse

    a = gateway(tmp_path, ca, "gwa")
    skewed = CaLife(a.paths, clock=lambda: datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(CMPErrorResponse, match="badTime") as e:
        skewed.refresh_crl(a.session("gwa"))
    assert e.value.protected
    with pytest.raises(CMPErrorResponse, match="badTime"):
        skewed.refresh_ca_certs(a.session("gwa"))
    st = CaLifeStore(a.paths, "gwa").load()
    assert st.unsupported == {}, st.unsupported
    now = datetime.now(UTC)
    assert st.backing_off("crlStatusList", now) and st.backing_off("caCerts", now)
    fixed = CaLife(a.paths)
    assert fixed.refresh_crl(a.session("gwa")).changed
    assert crl_file(a.paths, "gwa").exists()
    assert "crlStatusList" in CaLifeStore(a.paths, "gwa").load().checked
