"""A gateway's swcmp directories beside OpenSSL's CMP mock server, driven through the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from cryptography import x509

from openssl_mock import OpenSSL, mock_server
from pki import TestPKI, make_pki, pem_cert, pem_key
from swcmp.cli import cli
from swcmp.cmp import keys

SECRET = "test-secret-4711-not-for-output"
MAC_ARGS = ["-srv_ref", "1234", "-srv_secret", f"pass:{SECRET}"]
SIG_ARGS = ["-srv_cert", "srv.crt", "-srv_key", "srv.key", "-srv_trusted", "root.crt"]
GW = "gw1.example.net"


class Gateway:
    """A gateway's swcmp directories, session gw1 and its pre-made key."""

    def __init__(self, root: Path, openssl: OpenSSL | None = None) -> None:
        self.root = root
        #: whose `openssl cmp` mock answers (the machine's OpenSSL 3.0 by default)
        self.openssl = openssl
        self.pki: TestPKI = make_pki(root / "pki")
        self.config_dir = root / "etc"
        self.state_dir = root / "var"
        self.swanctl_dir = root / "swanctl"
        self.secret = root / "mac.secret"
        self.secret.write_text(SECRET + "\n")
        self.secret.chmod(0o600)
        self.key = keys.generate_key("ecdsa:p256")
        private = self.swanctl_dir / "private"
        private.mkdir(parents=True)
        (private / "gw1.key").write_bytes(pem_key(self.key))
        (private / "gw1.key").chmod(0o600)
        self.vici = f"unix://{root}/no-charon.vici"

    @property
    def cert_file(self) -> Path:
        return self.swanctl_dir / "x509" / "gw1.crt"

    def options(self) -> list[str]:
        return [
            "--config-dir", str(self.config_dir), "--state-dir", str(self.state_dir),
            "--swanctl-dir", str(self.swanctl_dir), "--vici", self.vici,
        ]  # fmt: skip

    def run(self, *args: str) -> Result:
        result = CliRunner().invoke(cli, [*self.options(), *args], prog_name="swcmp")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"unexpected exception {result.exception!r}\n{result.output}")
        assert SECRET not in result.output and SECRET not in result.stderr
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        result = self.run("--json", *args)
        assert result.exit_code == code, result.output
        return json.loads(result.stdout)

    def create_session(self, url: str) -> None:
        result = self.run(
            "session", "create", "gw1",
            "--entity", f"/CN={GW}", "--san", f"DNS:{GW}",
            "--ca-name", "/CN=swcmp Test Root CA", "--server-url", url,
            "--mac-ref", "1234", "--mac-secret-file", str(self.secret),
            "--trust", str(self.pki.dir / "root.crt"), "--key-type", "ecdsa:p256",
            # OpenSSL 3.5's mock ends its process on genm certReqTemplate (its own client
            # gets no answer either): it is not asked (test_cli_requests.py)
            *(["--no-ask-template"] if self.openssl is not None and self.openssl.newer
              else []),
        )  # fmt: skip
        assert result.exit_code == 0, result.output

    @contextmanager
    def ca(self, args: Sequence[str], cert: x509.Certificate) -> Iterator[str]:
        """The mock CA answering with ``cert``; the session is pointed at it."""
        self.pki.write("rsp.crt", pem_cert(cert))
        with mock_server([*args, "-rsp_cert", "rsp.crt", "-rsp_capubs", "root.crt"],
                         cwd=self.pki.dir, openssl=self.openssl) as url:  # fmt: skip
            if (self.config_dir / "sessions" / "gw1.toml").exists():
                assert self.run("session", "set", "gw1", "--server-url", url).exit_code == 0
            yield url
