"""A token session where python-pkcs11 is not installed (swcmp installed without its pkcs11
extra): the commands say what to install, with exit status 1, instead of a traceback ending
in ``ModuleNotFoundError: No module named 'pkcs11'``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

#: swcmp's command line in a Python where ``import pkcs11`` fails as when it is not installed.
WITHOUT_PKCS11 = [sys.executable, "-c",
                  "import sys; sys.modules['pkcs11'] = None; "
                  "from swcmp.cli import main; main()"]


def swcmp(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WITHOUT_PKCS11, "--config-dir", str(tmp_path / "etc"),
                           "--state-dir", str(tmp_path / "var"), "--swanctl-dir",
                           str(tmp_path / "swanctl"), "--vici", "none", *args],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def token_session(tmp_path: Path) -> Path:
    pin = tmp_path / "pin"
    pin.write_text("1234\n")
    pin.chmod(0o600)
    res = swcmp(tmp_path, "session", "create", "gw1", "--entity", "/CN=gw1.example.net",
                "--ca-name", "/CN=Example CA", "--server-url", "http://127.0.0.1:9/",
                "--mac-ref", "4711", "--mac-secret-file", str(pin),
                "--key", "pkcs11:token=swcmp;object=gw1",
                "--pkcs11-module", "/usr/lib/softhsm/libsofthsm2.so", "--pin-file", str(pin))
    assert res.returncode == 0, res.stderr
    return tmp_path


def says_what_to_install(text: str) -> None:
    assert "python-pkcs11" in text, text
    assert "pip install 'swcmp[pkcs11]'" in text, text
    assert "Traceback" not in text and "ModuleNotFoundError" not in text, text


def test_a_request_says_what_to_install(token_session: Path) -> None:
    res = swcmp(token_session, "request", "initial", "gw1")
    assert res.returncode == 1, res.stdout + res.stderr
    says_what_to_install(res.stderr)


def test_session_check_names_it_as_the_fix(token_session: Path) -> None:
    res = swcmp(token_session, "--json", "session", "check", "gw1")
    says_what_to_install(res.stdout + res.stderr)
