"""Runs the Siemens Mock CA (../shared/peers/siemens-mockca) for integration tests.

The Mock CA is an RFC 9483 CA written by other people on pyasn1-alt-modules; swcmp
only starts it. ``scripts/test`` makes its virtual environment (``.peers/siemens-venv``)
with the peer's own ``setup.sh``. Where the peer or its environment is missing, the
tests that need it skip and say why.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEER = Path(os.environ.get("SWCMP_SIEMENS_MOCKCA",
                           REPO.parent / "shared" / "peers" / "siemens-mockca"))
VENV = Path(os.environ.get("SWCMP_SIEMENS_VENV", REPO / ".peers" / "siemens-venv"))
ROOT_CERT = PEER / "src" / "data" / "unittest" / "root_cert_ed25519.pem"
SECRET = "SiemensIT"  # the Mock CA's fixed MAC secret (its README)
CA_NAME = "/CN=Mock CA"
START_TIMEOUT = 90.0


def unavailable() -> str | None:
    """Why the Mock CA cannot run here, or None."""
    if not (PEER / "run.sh").is_file():
        return f"the Siemens Mock CA is not at {PEER} (set SWCMP_SIEMENS_MOCKCA)"
    if not (VENV / ".ready").is_file():
        return (f"no virtual environment for the Siemens Mock CA at {VENV}: run "
                f"{PEER / 'setup.sh'} {VENV} (./scripts/test does)")
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MockCA:
    """A running Mock CA: its URL and what it logged."""

    def __init__(self, url: str, log: bytearray) -> None:
        self.url = url
        self.log = log

    def log_text(self) -> str:
        return self.log.decode(errors="replace")


@contextmanager
def mock_ca(work: Path, *, allow_same_key: bool = False) -> Iterator[MockCA]:
    """Start the Mock CA in ``work``; yield it; stop it with SIGTERM afterwards."""
    port = _free_port()
    cmd = [str(PEER / "run.sh"), str(VENV), str(work), str(port)]
    if allow_same_key:
        cmd.append("--allow-same-key")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    assert proc.stdout is not None
    log = bytearray()
    marker = f"Running on http://127.0.0.1:{port}".encode()
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while marker not in log:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the Siemens Mock CA did not start:\n"
                                   + log.decode(errors="replace")[-4000:])
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                chunk = proc.stdout.read1(65536)  # type: ignore[attr-defined]
                log.extend(chunk)
        drain = threading.Thread(target=_drain, args=(proc.stdout, log), daemon=True)
        drain.start()
        yield MockCA(f"http://127.0.0.1:{port}/issuing", log)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _drain(stream: object, sink: bytearray) -> None:
    for line in iter(stream.readline, b""):  # type: ignore[attr-defined]
        sink.extend(line)
