"""Runs `openssl cmp -port 0` (OpenSSL's CMP mock server) for integration tests."""

from __future__ import annotations

import re
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

OPENSSL = shutil.which("openssl")


@contextmanager
def mock_server(args: Sequence[str | Path], *, cwd: Path) -> Iterator[str]:
    """Start the mock with ``args``; yield its URL; stop it afterwards."""
    assert OPENSSL, "openssl is not installed"
    cmd = [OPENSSL, "cmp", "-port", "0", *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = b""
    port = None
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


def _drain(stream: object, sink: bytearray) -> None:
    for line in iter(stream.readline, b""):  # type: ignore[attr-defined]
        sink.extend(line)
