"""The CA-life commands against `openssl cmp` (3.0), a peer swcmp did not write.

As server (``openssl cmp -port``): `swcmp request revoke` with a reason is granted for the
mock's certificate; genm caCerts and rootCaCert are answered by an echo (3.0's mock sends
the request's ITAV back without a value: "no CA certificates", "no update"); with
``-send_error`` every genm is answered with a protected error, which swcmp remembers so
that ``serve`` does not ask again. As client against the test CA: an rr from `openssl cmp`
lands on the CRL that swcmp then fetches, with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509

from openssl_mock import OPENSSL, mock_server
from pki import TestPKI, make_pki, pem_cert
from renewal_env import Gateway, make_gateway
from swcmp.calife import CaLife, CaLifeStore
from swcmp.cli import cli
from swcmp.cmp.client import CMPClient
from swcmp.cmp.protection import MacProtection
from swcmp.cmp.transport import HttpTransport
from swcmp.state import StateStore
from swcmp.testca import TestCA
from test_testca_openssl import MAC_CONFIG, REF, SECRET, ok, openssl, swcmp_enroll

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")]

SIG_ARGS = ["-srv_cert", "srv.crt", "-srv_key", "srv.key", "-srv_trusted", "root.crt"]


def run(gw: Gateway, *args: str, code: int | None = 0) -> Any:
    p = gw.paths
    result = CliRunner().invoke(cli, ["--config-dir", str(p.config_dir), "--state-dir",
                                      str(p.state_dir), "--swanctl-dir", str(p.swanctl_dir),
                                      "--vici", "none", "--json", *args], prog_name="swcmp")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"unexpected exception {result.exception!r}\n{result.output}")
    if code is not None:
        assert result.exit_code == code, result.output
    return json.loads(result.stdout) if result.stdout.strip().startswith("{") else result


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    p = make_pki(tmp_path / "pki")
    p.write("rsp.crt", pem_cert(p.gw))  # the mock's rr wants the issuer and serial of it
    return p


def test_revoke_and_genm_against_the_mock(tmp_path: Path, pki: TestPKI) -> None:
    with mock_server([*SIG_ARGS, "-rsp_cert", "rsp.crt"], cwd=pki.dir) as url:
        gw = make_gateway(tmp_path / "gw", pki, url)
        got = run(gw, "request", "revoke", "gw1", "--reason", "superseded", "--yes")
        assert got["ok"] is True and "superseded" in got["message"], got
        cacerts = run(gw, "request", "cacerts", "gw1")
        assert cacerts["changed"] is False and "no CA certificates" in cacerts["message"]
        root = run(gw, "request", "rootca", "gw1")
        assert root["changed"] is False and "no root CA update" in root["message"], root
    stats = StateStore(gw.paths).load("gw1").stats
    assert stats["rr"] == {"sent": 1, "received": 1, "failed": 0}
    assert stats["genm"]["sent"] == 2 and stats["genm"]["received"] == 2


def test_a_ca_that_answers_genm_with_an_error_is_not_asked_every_pass(
        tmp_path: Path, pki: TestPKI) -> None:
    with mock_server([*SIG_ARGS, "-rsp_cert", "rsp.crt", "-send_error"], cwd=pki.dir) as url:
        gw = make_gateway(tmp_path / "gw", pki, url)
        result = run(gw, "request", "cacerts", "gw1", code=1)
        assert "rejection" in result["error"], result
        st = CaLifeStore(gw.paths, "gw1").load()
        assert "caCerts" in st.unsupported, st
        life = CaLife(gw.paths)
        # asks rootCaCert, crlStatusList and then currentCRL once, not caCerts
        life.maintain(gw.session)
        sent = StateStore(gw.paths).load("gw1").stats["genm"]["sent"]
        assert sent == 4, sent
        st = CaLifeStore(gw.paths, "gw1").load()
        refused = {"caCerts", "rootCaCert", "crlStatusList", "currentCRL"}
        assert set(st.unsupported) == refused, st
        life.maintain(gw.session)  # the next pass asks nothing
        assert StateStore(gw.paths).load("gw1").stats["genm"]["sent"] == 4
        status = run(gw, "status", "gw1")["sessions"][0]["ca"]
        assert set(status["unsupported"]) == refused
        nxt = life.next_due(gw.session)
        assert nxt is not None and (nxt - life.clock()).days >= 29


@pytest.fixture
def ca(tmp_path: Path) -> Iterator[TestCA]:
    with TestCA(tmp_path / "ca", config=MAC_CONFIG) as running:
        yield running


def test_openssl_rr_lands_on_the_test_cas_crl(ca: TestCA) -> None:
    _, gw_key, gw_crt = swcmp_enroll(ca)
    ok(openssl(ca, "-cmd", "rr", "-cert", gw_crt, "-key", gw_key, "-oldcert", gw_crt,
               "-trusted", ca.ca_cert_path, "-revreason", "4"))
    # and OpenSSL takes the genp carrying the CRL
    out = ok(openssl(ca, "-cmd", "genm", "-ref", REF, "-secret", f"pass:{SECRET}",
                     "-trusted", ca.ca_cert_path, "-infotype", "currentCRL"))
    assert "received GENP" in out
    serial = x509.load_pem_x509_certificate(gw_crt.read_bytes()).serial_number
    with HttpTransport(ca.url) as tr:
        crl = CMPClient(tr, recipient=ca.ca_cert.subject, trust=[ca.ca_cert]).current_crl(
            protection=MacProtection(reference=REF.encode(), secret=SECRET.encode()))
    assert crl is not None and crl.is_signature_valid(ca.ca_cert.public_key())  # type: ignore[arg-type]
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.superseded
