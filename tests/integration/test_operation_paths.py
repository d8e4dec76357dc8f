"""Per-operation endpoints through the CLI against OpenSSL's CMP mock server, reached
through tests/cmp_router.py: a front end that refuses (HTTP 404) every message not at
its RFC 9483 operation label, and every certConf or pollReq not at the path where its
transaction began. So these tests fail if swcmp sends a message of a transaction to
another URL, also after a run killed while the CA delayed its answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from cmp_router import label_router
from openssl_gateway import GW, MAC_ARGS, SIG_ARGS, Gateway
from openssl_mock import OPENSSL, OpenSSL, mock_server
from pki import TestPKI, make_pki, pem_cert
from renewal_env import make_gateway, renew_killed_at
from swcmp.cmp.transport import HttpTransport
from swcmp.enroll import request_initial
from swcmp.errors import SwcmpError
from swcmp.names import format_dn
from swcmp.renewal import Renewer
from swcmp.session import Session
from swcmp.sessionfile import SessionStore
from swcmp.state import StateStore
from swcmp.store import Journal
from testca_site import MAC_REF, CAHolder, Site, ca_config, make_site

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed"),
]

BASE = "/.well-known/cmp/p/gw"


def test_labels_under_a_profile_through_the_cli(tmp_path: Path,
                                                openssl_peer: OpenSSL) -> None:
    """`--profile-label gw --operation-paths labels`: the ir, its pollReq and its certConf
    at .../initialization, the genm caCerts at .../getcacerts, the rr at .../revocation."""
    gw = Gateway(tmp_path, openssl_peer)
    issued = gw.pki.issue(gw.key, GW)
    delayed = ["-poll_count", "1", "-check_after", "1"]
    with gw.ca([*MAC_ARGS, *delayed], issued) as url, label_router(url) as router:
        gw.create_session(router.url)
        set_ = gw.run("session", "set", "gw1", "--profile-label", "gw",
                      "--operation-paths", "labels")
        assert set_.exit_code == 0, set_.output
        shown = gw.json("session", "show", "gw1")
        assert shown["profile_label"] == "gw" and shown["operation_paths"] == "labels"
        check = gw.run("--vici", "none", "session", "check", "gw1").stdout
        assert f"messages to {router.url}{BASE}/<operation label>" in check, check
        ir = gw.json("request", "initial", "gw1", "--no-deploy")
        assert ir["serial"] == f"{issued.serial_number:x}"
    assert x509.load_pem_x509_certificate(gw.cert_file.read_bytes()) == issued
    assert router.refused() == []
    assert router.paths_of("ir") == [f"{BASE}/initialization"]
    assert router.paths_of("certConf") == [f"{BASE}/initialization"]
    assert set(router.paths_of("pollReq")) == {f"{BASE}/initialization"}

    gw.pki.write("ref.crt", pem_cert(issued))
    ref = ["-ref_cert", "ref.crt"] if openssl_peer.newer else []  # 3.5's mock checks the rr
    # not gw.ca(), which points the session at the mock's /pkix/ (a path, refused
    # beside a profile label)
    with mock_server([*SIG_ARGS, *delayed, *ref, "-rsp_cert", "rsp.crt"], cwd=gw.pki.dir,
                     openssl=openssl_peer) as url, label_router(url) as router:
        gw.run("session", "set", "gw1", "--server-url", router.url)
        assert gw.json("request", "cacerts", "gw1", "--no-deploy")["ok"] is True
        revoked = gw.json("request", "revoke", "gw1", "--reason", "superseded", "--yes")
        assert revoked["ok"] is True, revoked
    assert router.refused() == []
    assert router.paths_of("genm") == [f"{BASE}/getcacerts"]
    assert router.paths_of("rr") == [f"{BASE}/revocation"]


def test_a_ca_without_the_template_label_is_remembered_once_it_takes_the_ir(
        tmp_path: Path) -> None:
    """A CA routing by RFC 9483 labels that does not offer getcertreqtemplate answers the
    template question HTTP 404 there. Once the same CA took the IR, that is remembered
    like a CA refusing the question: the next IR does not ask again (no 404 warned about
    before every IR and every renewal with a new key)."""
    gw = Gateway(tmp_path)
    issued = gw.pki.issue(gw.key, GW)
    with gw.ca(MAC_ARGS, issued) as url, \
            label_router(url, unknown=frozenset({"getcertreqtemplate"})) as router:
        gw.create_session(router.url)
        gw.run("session", "set", "gw1", "--profile-label", "gw", "--operation-paths", "labels")
        assert gw.json("request", "initial", "gw1", "--no-deploy")["ok"] is True
        assert router.refused() == [(f"{BASE}/getcertreqtemplate", "genm")]
        unsupported = gw.json("status", "gw1")["sessions"][0]["ca"]["unsupported"]
        assert "404" in unsupported["certReqTemplate"]["error"], unsupported
        gw.cert_file.unlink()
        assert gw.json("request", "initial", "gw1", "--no-deploy")["ok"] is True
    assert router.refused() == [(f"{BASE}/getcertreqtemplate", "genm")]  # not asked again
    assert router.paths_of("ir") == [f"{BASE}/initialization"] * 2


def test_a_wrong_path_is_refused_and_named(tmp_path: Path) -> None:
    """The router is strict: body-type paths (.../ir) are not its labels. swcmp says
    which setting to look at, and stores nothing."""
    gw = Gateway(tmp_path)
    issued = gw.pki.issue(gw.key, GW)
    with gw.ca(MAC_ARGS, issued) as url, label_router(url) as router:
        gw.create_session(router.url + BASE)
        gw.run("session", "set", "gw1", "--operation-paths", "body")
        result = gw.run("request", "initial", "gw1", "--no-deploy")
    assert result.exit_code != 0
    assert "404" in result.output and "--operation-paths" in result.output, result.output
    # the genm certReqTemplate asked before the IR (at .../genm) is refused too; the IR
    # goes on without a template and is refused at .../ir
    assert router.refused() == [(f"{BASE}/genm", "genm"), (f"{BASE}/ir", "ir")]
    assert not gw.cert_file.exists()


def test_explicit_operation_urls(tmp_path: Path) -> None:
    """EJBCA-style aliases (ir with MAC on one, kur with signature on another):
    `--operation-url` wins over the server URL; each certConf follows its request."""
    gw = Gateway(tmp_path)
    issued = gw.pki.issue(gw.key, GW)
    with gw.ca(MAC_ARGS, issued) as url, label_router(url) as router:
        gw.create_session(router.url + "/refused")
        result = gw.run("session", "set", "gw1",
                        "--operation-url", f"ir={router.url}{BASE}/initialization",
                        "--operation-url",
                        f"getcertreqtemplate={router.url}{BASE}/getcertreqtemplate")
        assert result.exit_code == 0, result.output
        assert gw.json("request", "initial", "gw1", "--no-deploy")["ok"] is True
    assert router.refused() == []
    assert router.paths_of("certConf") == [f"{BASE}/initialization"]
    # the template asked before the IR went to its own URL
    assert router.paths_of("genm") == [f"{BASE}/getcertreqtemplate"]

    renewed = gw.pki.issue(gw.key, GW, serial=issued.serial_number, days=400)
    # gw.ca() points the server URL at the mock itself: the kur must not go there
    with gw.ca(SIG_ARGS, renewed) as url, label_router(url) as router:
        result = gw.run("session", "set", "gw1",
                        "--operation-url", f"ir={router.url}{BASE}/initialization",
                        "--operation-url", f"kur={router.url}{BASE}/keyupdate")
        assert result.exit_code == 0, result.output
        shown = gw.json("session", "show", "gw1")
        assert shown["operation_urls"] == [f"initialization={router.url}{BASE}/initialization",
                                           f"keyupdate={router.url}{BASE}/keyupdate"]
        assert gw.json("request", "keyupdate", "gw1", "--no-deploy")["ok"] is True
        bad = gw.run("session", "set", "gw1", "--operation-url",
                     "kur=http://user:pw@ca.example.net/")
        assert bad.exit_code != 0 and "pw" not in bad.output, bad.output
    assert router.refused() == []
    assert router.paths_of("kur") == router.paths_of("certConf") == [f"{BASE}/keyupdate"]
    assert x509.load_pem_x509_certificate(gw.cert_file.read_bytes()) == renewed




def _delayed_kur(tmp_path: Path) -> tuple[TestPKI, x509.Certificate, list[str]]:
    """A PKI, the certificate OpenSSL's mock issues for the key update, and the mock's
    arguments: it answers the kur "waiting" once."""
    pki = make_pki(tmp_path / "pki")
    renewed = pki.issue(pki.gw_key, serial=pki.gw.serial_number, days=400)
    pki.write("rsp.crt", pem_cert(renewed))
    return pki, renewed, [*SIG_ARGS, "-rsp_cert", "rsp.crt", "-poll_count", "1",
                          "-check_after", "1"]

@pytest.mark.parametrize("phase", ["waiting", "confirm-waiting"])
def test_a_resumed_transaction_goes_where_it_began(tmp_path: Path, phase: str) -> None:
    """A renewal killed while OpenSSL 3.5's mock delays the kup (or the pkiConf) is
    finished by the next run at the journaled URL, even after the session's profile
    label changed: the pollReq and certConf of the old KUR go to .../p/gw/keyupdate."""
    pki, renewed, args = _delayed_kur(tmp_path)
    with mock_server(args, cwd=pki.dir, openssl=OpenSSL.of("3.5")) as url, \
            label_router(url) as router:
        gw = make_gateway(tmp_path / "gw", pki, router.url, profile_label="gw",
                          operation_paths="labels")
        root = gw.paths.config_dir.parent
        renew_killed_at(root, phase)
        entry = Journal(gw.paths, "gw1").load()
        assert entry is not None and entry.url == f"{router.url}{BASE}/keyupdate"
        # the operator changes the label meanwhile: new transactions go elsewhere,
        # the journaled one does not
        store = SessionStore(gw.paths.config_dir)
        from swcmp.session import set_fields

        session = set_fields(store.load("gw1"), {"profile_label": "other"})
        store.save(session)
        Renewer(gw.paths, sleep=lambda s: None).renew(session)
    assert router.refused() == []
    assert set(router.paths_of("pollReq")) == {f"{BASE}/keyupdate"}
    assert router.paths_of("kur") == [f"{BASE}/keyupdate"]  # only the killed run's
    stats = StateStore(gw.paths).load("gw1").stats
    assert stats["kur"]["sent"] == 0 and stats["pollReq"]["sent"] >= 1
    assert gw.cert == renewed and gw.pair_matches()
    assert Journal(gw.paths, "gw1").load() is None


def test_a_transaction_of_a_single_url_session_resumes_at_its_url(tmp_path: Path) -> None:
    """A session without operation paths sends every message to its server URL; a renewal
    killed while OpenSSL 3.5's mock delays the kup journals that URL, and the next run
    polls and confirms there even though the operator moved the session's server URL
    meanwhile (the router refuses a pollReq anywhere but where its transaction began)."""
    pki, renewed, args = _delayed_kur(tmp_path)
    with mock_server(args, cwd=pki.dir, openssl=OpenSSL.of("3.5")) as url, \
            label_router(url) as router:
        began = f"{router.url}{BASE}/keyupdate"
        gw = make_gateway(tmp_path / "gw", pki, began, ask_template=False)
        root = gw.paths.config_dir.parent
        renew_killed_at(root, "waiting")
        entry = Journal(gw.paths, "gw1").load()
        assert entry is not None and entry.url == began and not entry.url_per_body
        store = SessionStore(gw.paths.config_dir)
        from swcmp.session import set_fields

        session = set_fields(store.load("gw1"), {"server_url": f"{router.url}/moved"})
        store.save(session)
        Renewer(gw.paths, sleep=lambda s: None).renew(session)
    assert router.refused() == []
    assert set(router.paths_of("pollReq")) == {f"{BASE}/keyupdate"}
    assert router.paths_of("certConf") == [f"{BASE}/keyupdate"]
    assert router.paths_of("kur") == [f"{BASE}/keyupdate"]  # only the killed run's
    assert gw.cert == renewed and gw.pair_matches()
    assert Journal(gw.paths, "gw1").load() is None


def test_after_a_late_confirmation_at_a_gone_url_the_new_request_goes_to_the_new_one(
        tmp_path: Path) -> None:
    """A renewal killed after the certificate arrived (staged, not confirmed); the CA then
    moved (the old URL refuses connections) and the operator gave the session the new
    URL. The late certConf goes to the journaled URL and fails there; the key update
    that replaces it is a new transaction and goes to the new server URL (OpenSSL's mock
    at both), not to the URL the transport posted to last."""
    pki = make_pki(tmp_path / "pki")
    renewed = pki.issue(pki.gw_key, serial=pki.gw.serial_number, days=400)
    pki.write("rsp.crt", pem_cert(renewed))
    args = [*SIG_ARGS, "-rsp_cert", "rsp.crt"]
    with mock_server(args, cwd=pki.dir) as old:
        gw = make_gateway(tmp_path / "gw", pki, old, ask_template=False)
        root = gw.paths.config_dir.parent
        renew_killed_at(root, "staged")
    entry = Journal(gw.paths, "gw1").load()
    assert entry is not None and entry.phase == "received" and entry.url == old
    with mock_server(args, cwd=pki.dir) as new:
        store = SessionStore(gw.paths.config_dir)
        from swcmp.session import set_fields

        session = set_fields(store.load("gw1"), {"server_url": new})
        store.save(session)
        out = Renewer(gw.paths, sleep=lambda s: None).renew(session)
    assert out.ok, out
    stats = StateStore(gw.paths).load("gw1").stats
    # the late certConf tried at the gone URL, then the new kur and its certConf
    assert stats["certConf"]["sent"] == 2 and stats["kur"]["sent"] == 1, stats
    assert gw.cert == renewed and gw.pair_matches()
    assert Journal(gw.paths, "gw1").load() is None


# swcmp's own test CA with --label-paths: the same routing rules, no Debian 13 needed.

def label_session(site: Site, ca: CAHolder) -> Session:
    cn = "gw1.example.net"
    return site.store.create("gw1", {
        "entity": f"CN={cn}", "sans": (f"DNS:{cn}",),
        "ca_name": format_dn(ca.ca.ca_cert.subject),
        "server_url": f"http://127.0.0.1:{ca.port}", "profile_label": "gw",
        "operation_paths": "labels", "ir_auth": "mac", "mac_ref": MAC_REF,
        "mac_secret_file": str(site.secret_file), "key": "gw1", "key_type": "ecdsa:p256",
        "regenerate": True})


class Misroute:
    """An HttpTransport that sends the n-th message to the wrong path (a broken client)."""

    def __init__(self, url: str, n: int) -> None:
        self.inner, self.n, self.count = HttpTransport(url), n, 0

    def post(self, data: bytes, url: str | None = None) -> bytes:
        self.count += 1
        if self.count == self.n and url is not None:
            url = url.rsplit("/", 1)[0] + "/elsewhere"
        return self.inner.post(data, url)

    def end_transaction(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_test_ca_with_label_paths(tmp_path: Path) -> None:
    """An IR through the test CA's label routing; a certConf sent elsewhere is refused;
    a renewal killed while the CA delays the kup resumes at the journaled URL after the
    profile label changed, and the CA issued no second certificate."""
    site = make_site(tmp_path / "gw")
    # the refused certConf leaves the key certified but unconfirmed: allow it again
    ca = CAHolder(tmp_path / "ca", ca_config(label_paths=True, unique_public_keys=False))
    try:
        session = label_session(site, ca)
        with pytest.raises(SwcmpError, match="404"):
            request_initial(session, site.paths, store=site.store,
                            transport=Misroute(ca.ca.url, 2))  # the certConf
        assert not site.paths.cert_file("gw1").exists()
        assert request_initial(session, site.paths, store=site.store).ok
        before = len(ca.issued())
        ca.restart(ca_config(label_paths=True, poll=1, check_after=1))
        renew_killed_at(site.root, "waiting")
        entry = Journal(site.paths, "gw1").load()
        base = f"http://127.0.0.1:{ca.port}/.well-known/cmp/p"
        assert entry is not None and entry.url == f"{base}/gw/keyupdate"
        from swcmp.session import set_fields

        session = set_fields(site.store.load("gw1"), {"profile_label": "other"})
        site.store.save(session)
        out = Renewer(site.paths, sleep=lambda s: None).renew(session)
        assert out.ok
        assert len(ca.issued()) == before + 1  # the killed run's kur, confirmed late
        assert Journal(site.paths, "gw1").load() is None
    finally:
        ca.stop()


def test_a_resumed_transaction_the_ca_lost_gets_a_hint_that_changes_something(
        tmp_path: Path) -> None:
    """A CA restarted without the transaction a killed run left waiting answers the
    resumed pollReq with HTTP 404 at the journaled URL. Changing the session's URLs does
    not move that pollReq, so the hint must not send the operator there: it names the
    URL the transaction began at and the poll_limit that ends it."""
    import json
    import subprocess

    from testca_site import swcmp_cmd

    site = make_site(tmp_path / "gw")
    ca = CAHolder(tmp_path / "ca", ca_config(label_paths=True))
    try:
        session = label_session(site, ca)
        assert request_initial(session, site.paths, store=site.store).ok
        ca.restart(ca_config(label_paths=True, poll=100, check_after=1))
        renew_killed_at(site.root, "waiting")
        ca.restart(ca_config(label_paths=True))  # it forgot the waiting transaction
        res = subprocess.run(swcmp_cmd(site, "--json", "request", "keyupdate", "gw1"),
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 1, res.stdout + res.stderr
        out = json.loads(res.stdout)
        assert "404" in out["error"], out
        assert "/p/gw/keyupdate, where it began" in out["hint"], out
        assert "poll_limit" in out["hint"] and "`swcmp status gw1`" in out["hint"], out
        assert "--server-url" not in out["hint"] and "--operation-paths" not in out["hint"]
    finally:
        ca.stop()
