"""Runs `openssl cmp -port 0` (OpenSSL's CMP mock server) for integration tests.

Two OpenSSL releases are peers: the machine's (Debian 12: OpenSSL 3.0) and Debian 13's
(OpenSSL 3.5, run from the root file system of tests/debian_root.py). Tests take the
``openssl_peer`` fixture (conftest.py), parametrized over :data:`VERSIONS`, and pass it
to :func:`mock_server` or call :meth:`OpenSSL.argv` for a client.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from debian_root import DebianRoot

OPENSSL = shutil.which("openssl")
#: The OpenSSL releases swcmp is tested against: the machine's and Debian 13's.
VERSIONS = ("3.0", "3.5")


class OpenSSL:
    """One release's ``openssl`` command; ``root`` is None for the machine's own."""

    def __init__(self, version: str, root: DebianRoot | None = None) -> None:
        self.version = version
        self.root = root

    @classmethod
    def of(cls, version: str) -> OpenSSL:
        """The machine's OpenSSL for "3.0", Debian 13's for "3.5" (skips where it cannot)."""
        if version == "3.0":
            return cls(version)
        from debian_root import trixie

        return cls(version, trixie())

    @property
    def newer(self) -> bool:
        """OpenSSL 3.5: its mock also delays certConf, genm and rr, and answers crlStatusList."""
        return self.version != "3.0"

    def argv(self, args: Sequence[str | Path], *, cwd: Path) -> list[str]:
        """The host command line for ``openssl ARGS`` run in ``cwd`` (bound into a root)."""
        if self.root is None:
            assert OPENSSL, "openssl is not installed"
            return [OPENSSL, *map(str, args)]
        return self.root.argv(["openssl", *map(str, args)], binds=[cwd], cwd=cwd)

    def run(self, args: Sequence[str | Path], *, cwd: Path, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
        """Run ``openssl ARGS`` in ``cwd``; stdout and stderr together in ``stdout``."""
        return subprocess.run(self.argv(args, cwd=cwd), cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)


@contextmanager
def mock_server(args: Sequence[str | Path], *, cwd: Path,
                openssl: OpenSSL | None = None) -> Iterator[str]:
    """Start the mock of ``openssl`` (default: the machine's) with ``args``; yield its URL;
    stop it afterwards."""
    cmd = (openssl or OpenSSL("3.0")).argv(["cmp", "-port", "0", *args], cwd=cwd)
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = b""
    port = None
    log = bytearray()
    deadline = time.monotonic() + 10
    try:
        while port is None and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                chunk = proc.stdout.read1(4096)  # type: ignore[attr-defined]
                if not chunk:
                    break
                out += chunk
                m = re.search(rb"ACCEPT \S*:(\d+)", out)
                if m:
                    port = int(m.group(1))
        if port is None:
            raise RuntimeError(f"openssl cmp mock did not start: {out.decode(errors='replace')}")
        # Keep draining the mock's log so that it never blocks on a full pipe.
        log = bytearray(out)
        drain = threading.Thread(target=_drain, args=(proc.stdout, log), daemon=True)
        drain.start()
        yield f"http://127.0.0.1:{port}/pkix/"
    finally:
        proc.kill()
        proc.wait(timeout=5)
        if os.environ.get("SWCMP_MOCK_LOG"):
            print(bytes(log).decode(errors="replace"))


def _drain(stream: object, sink: bytearray) -> None:
    for line in iter(stream.readline, b""):  # type: ignore[attr-defined]
        sink.extend(line)
