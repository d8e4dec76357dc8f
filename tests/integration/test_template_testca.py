"""genm certReqTemplate (RFC 9483 4.3.3) through the CLI against the embedded test CA, with
a recording proxy on the path: a template that fixes the subject and the key type, a CA
that does not know the question (asked once, then remembered), and a template that
cannot be read (logged; the request goes on). The Siemens Mock CA's template is tested
in test_siemens_mockca.py, OpenSSL 3.5's client against the test CA's template in
test_testca_openssl.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hostile_proxy import HostileProxy, forge
from swcmp.cli import cli
from swcmp.cmp import codec, oids
from swcmp.cmp.messages import InfoValue
from swcmp.cmp.protection import MacProtection
from swcmp.names import format_dn
from swcmp.testca import CAConfig, TestCA
from testca_site import MAC_REF, MAC_SECRET, ca_config

pytestmark = pytest.mark.integration


class Gateway:
    """swcmp's directories and session gw1 (MAC IR), its CA behind a recording proxy."""

    def __init__(self, root: Path, ca: TestCA, proxy: HostileProxy) -> None:
        self.root, self.ca, self.proxy = root, ca, proxy
        self.secret = root / "mac.secret"
        self.secret.write_text(MAC_SECRET + "\n")
        self.secret.chmod(0o600)

    def run(self, *args: str, code: int = 0) -> Result:
        opts = ["--config-dir", str(self.root / "etc"), "--state-dir", str(self.root / "var"),
                "--swanctl-dir", str(self.root / "swanctl"), "--vici", "none"]
        result = CliRunner().invoke(cli, [*opts, *args], prog_name="swcmp")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"unexpected exception {result.exception!r}\n{result.output}")
        assert result.exit_code == code, result.output
        assert MAC_SECRET not in result.output
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self.run("--json", *args, code=code).stdout)

    def create(self, *extra: str) -> None:
        self.run("session", "create", "gw1", "--entity", "/CN=gw1.example.net",
                 "--san", "DNS:gw1.example.net",
                 "--ca-name", format_dn(self.ca.ca_cert.subject),
                 "--server-url", self.proxy.url, "--mac-ref", MAC_REF,
                 "--mac-secret-file", str(self.secret), "--key-type", "ecdsa:p256", *extra)

    def unsupported(self) -> dict[str, Any]:
        info = self.json("status", "gw1")["sessions"][0]["ca"]
        return dict(info.get("unsupported", {}))


@pytest.fixture
def site(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Gateway]:
    config: CAConfig = getattr(request, "param", ca_config())
    with TestCA(tmp_path / "ca", config=config) as ca, HostileProxy(ca.url) as proxy:
        yield Gateway(tmp_path, ca, proxy)


@pytest.mark.parametrize("site", [ca_config(template_key_types=("ecdsa:p384", "rsa:4096"),
                                            template_subject="/O=Example")], indirect=True)
def test_a_subject_and_key_type_the_template_forbids_are_refused_before_sending(
        site: Gateway) -> None:
    gw = site
    gw.create()
    shown = gw.json("request", "template", "gw1")
    assert shown["template"]["key_types"] == ["ecdsa:p384", "rsa:4096"], shown
    assert shown["template"]["subject"] == [{"type": "O", "oid": "2.5.4.10",
                                             "value": "Example"}]
    assert shown["fits"] is False and len(shown["problems"]) == 2, shown
    # what to run for each kind of problem, the key type one the CA allows
    assert shown["fixes"] == ["`swcmp session set gw1 --key-type ecdsa:p384`",
                              "`swcmp session set gw1 --entity DN` with the subject above, "
                              "or ask the CA operator"], shown
    assert "fix         `swcmp session set gw1 --key-type ecdsa:p384`" in gw.run(
        "request", "template", "gw1").output

    refused = gw.json("request", "initial", "gw1", code=1)
    assert "does not allow the key type ecdsa:p256: it allows ecdsa:p384, rsa:4096" in \
        refused["error"], refused
    assert "wants the subject's O to be 'Example'" in refused["error"]
    assert "`swcmp session set gw1 --key-type ecdsa:p384`" in refused["hint"]
    gw.run("session", "set", "gw1", "--key-type", "ecdsa:p384")
    refused = gw.json("request", "initial", "gw1", code=1)
    assert "--entity DN" in refused["hint"], refused
    assert gw.proxy.kinds() == ["genm"] * 4  # the template asked, nothing requested
    assert not (gw.root / "swanctl" / "private" / "gw1.key").exists()  # no key was made

    gw.run("session", "set", "gw1", "--entity", "/O=Example/CN=gw1.example.net")
    assert gw.json("request", "initial", "gw1")["ok"] is True
    assert gw.proxy.kinds()[4:] == ["genm", "ir", "certConf"]
    assert "certReqTemplate" not in gw.unsupported()


@pytest.mark.parametrize("site", [ca_config(template_unknown=True)], indirect=True)
def test_a_ca_that_does_not_know_the_question_is_asked_once(site: Gateway) -> None:
    gw = site
    gw.create("--regenerate")
    assert gw.json("request", "initial", "gw1")["ok"] is True
    assert gw.proxy.kinds() == ["genm", "ir", "certConf"]
    assert "certReqTemplate" in gw.unsupported()
    # a key update with a new key, and another IR: the template is not asked again
    assert gw.json("request", "keyupdate", "gw1")["ok"] is True
    assert gw.proxy.kinds()[3] == "kur", gw.proxy.kinds()
    n = len(gw.proxy.kinds())
    (gw.root / "swanctl" / "x509" / "gw1.crt").unlink()
    assert gw.json("request", "initial", "gw1")["ok"] is True
    assert gw.proxy.kinds()[n:] == ["ir", "certConf"]
    # asked on purpose, the CA is asked again, and says the same
    shown = gw.run("request", "template", "gw1").output
    assert "the CA does not know the question" in shown, shown
    assert gw.proxy.kinds()[-1] == "genm"


def test_a_ca_without_a_template_is_asked_each_time(site: Gateway) -> None:
    """The test CA's default: id-it-certReqTemplate without a value (no requirements, RFC
    9483 4.3.3), which is no refusal: not remembered."""
    gw = site
    gw.create()
    assert gw.json("request", "template", "gw1")["template"] == {
        "offered": False, "subject": None, "key_types": [], "extensions": [],
        "other_fields": [], "unreadable": []}
    assert gw.json("request", "initial", "gw1")["ok"] is True
    assert gw.proxy.kinds() == ["genm", "genm", "ir", "certConf"]
    assert "certReqTemplate" not in gw.unsupported()


def test_a_template_that_cannot_be_read_is_logged_and_the_request_goes_on(
        site: Gateway) -> None:
    gw = site
    gw.create()
    garbage = codec.genm_body([InfoValue(oids.IT_CERT_REQ_TEMPLATE, b"\x30\x03\x02\x01\x05")],
                              kind="genp")
    gw.proxy.on("genm", forge(lambda ex: garbage, sender_der=gw.ca.ca_cert.subject.public_bytes(),
                              protection=MacProtection(reference=MAC_REF.encode(),
                                                       secret=MAC_SECRET.encode())))
    result = gw.run("request", "initial", "gw1")
    assert "certificate request template cannot be read" in result.stderr, result.stderr
    assert "the initial request goes on without it" in result.stderr
    assert gw.proxy.kinds() == ["genm", "ir", "certConf"]
    assert "certReqTemplate" not in gw.unsupported()  # asked again next time


def test_a_template_anyone_on_the_path_could_send_forbids_nothing(site: Gateway) -> None:
    """An unprotected genp whose template would forbid the session's key type: its
    protection is checked like any answer's, so it is not believed and the IR goes on."""
    gw = site
    gw.create()
    rsa_only = codec.cert_req_template_value(
        None, [(oids.REG_CTRL_RSA_KEY_LEN, codec.rsa_key_len_der(4096))])
    forbidding = codec.genm_body([InfoValue(oids.IT_CERT_REQ_TEMPLATE, rsa_only)], kind="genp")
    gw.proxy.on("genm", forge(lambda ex: forbidding,
                              sender_der=gw.ca.ca_cert.subject.public_bytes()))
    result = gw.run("request", "initial", "gw1")
    assert "could not be had" in result.stderr, result.stderr
    assert gw.proxy.kinds() == ["genm", "ir", "certConf"]


def test_a_ca_that_hangs_on_the_question_fails_the_request_there(site: Gateway) -> None:
    """No answer within the session's timeout: the IR would fare no better, so it is not
    sent (one timeout, not two); an HTTP error instead is no answer about the template,
    and the IR goes on."""
    from hostile_proxy import hang, http_status

    gw = site
    gw.create("--timeout", "2")
    gw.proxy.on("genm", hang())
    failed = gw.json("request", "initial", "gw1", code=1)
    assert "within 2s" in failed["error"], failed
    assert gw.proxy.kinds() == ["genm"]
    gw.proxy.on("genm", http_status(400, "Bad Request"))
    result = gw.run("request", "initial", "gw1")
    assert "could not be had" in result.stderr, result.stderr
    assert gw.proxy.kinds() == ["genm", "genm", "ir", "certConf"]


def test_a_key_update_the_template_now_forbids_fails_in_renew_status_and_metrics(
        site: Gateway) -> None:
    """The CA takes only ecdsa:p384 keys from now on: a renewal making a new ecdsa:p256 key
    is refused before its request is sent, and that is never silent: `renew` exits 1,
    `status` says failed with the reason, and the metrics count the failures the
    SwcmpRenewalsFailing alert reads."""
    import dataclasses

    gw = site
    gw.create("--regenerate")
    (gw.root / "etc" / "swcmp.toml").write_text(
        f'[metrics]\ntextfile = "{gw.root / "metrics" / "swcmp.prom"}"\n')
    assert gw.json("request", "initial", "gw1")["ok"] is True
    gw.run("session", "enable-auto-update", "gw1")
    gw.ca.engine.config = dataclasses.replace(gw.ca.engine.config,
                                              template_key_types=("ecdsa:p384",))
    before = len(gw.proxy.kinds())
    for _ in range(3):
        out = gw.json("renew", "gw1", "--force", code=1)
        [result] = out["results"]
        assert result["result"] == "failed", result
        assert "does not allow the key type ecdsa:p256" in result["message"], result
        assert "--key-type ecdsa:p384" in result["message"], result
    assert set(gw.proxy.kinds()[before:]) == {"genm"}  # no key update was sent
    entry = gw.json("status", "gw1")["sessions"][0]
    assert entry["state"] == "failed", entry
    assert entry["last_result"]["ok"] is False
    assert "does not allow the key type" in entry["last_result"]["message"]
    metrics = (gw.root / "metrics" / "swcmp.prom").read_text().splitlines()
    assert 'swcmp_consecutive_failures{session="gw1"} 3' in metrics
    assert 'swcmp_session_state{session="gw1",state="failed"} 1' in metrics
