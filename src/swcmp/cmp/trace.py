"""``--trace DIR``: every CMP message sent and every answer received, as DER files.

For an operator whose CA refuses a request: the files are what to send the CA's vendor
(the counterpart of ``openssl cmp -reqout/-rspout``). Each message is written as
``DIR/<UTC time>-<sequence>-<request|answer>.der`` (mode 0600, the directory 0700), in
the order they crossed the wire; an HTTP error's body is written as the answer too.
They hold what went over the network and nothing else: a MAC secret is never in a
message (only the MAC computed with it, with its salt and iteration count), and no
private key is ever sent (swcmp does no central key generation).

Tracing is per process (a CLI run): :func:`tracing` switches it on around a command,
and :class:`~swcmp.cmp.transport.HttpTransport` calls :func:`record` for each message.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_DIR: list[Path] = []
_SEQ = itertools.count(1)


@contextmanager
def tracing(directory: Path | None) -> Iterator[None]:
    """Write every message of the enclosed work into ``directory`` (None: no tracing)."""
    if directory is None:
        yield
        return
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True)
        directory.chmod(0o700)  # whatever the umask
    with _LOCK:
        _DIR.append(directory)
    try:
        yield
    finally:
        with _LOCK:
            _DIR.remove(directory)


def record(direction: str, data: bytes) -> Path | None:
    """Write one message (``direction`` is "request" or "answer") when tracing is on.

    A file that cannot be written is reported in the log and does not stop the
    exchange: the trace serves the operator, the renewal comes first.
    """
    with _LOCK:
        if not _DIR:
            return None
        directory = _DIR[-1]
        seq = next(_SEQ)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path = directory / f"{stamp}-{seq:04d}-{direction}.der"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as e:
        log.warning("--trace: could not write %s: %s", path, e)
        return None
    return path
