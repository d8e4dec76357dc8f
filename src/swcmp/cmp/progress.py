"""Progress of exchanges with a CA, for a person at a terminal.

The CMP client wraps each request/answer round trip in :func:`exchange`. Nothing
happens unless a reporter is installed: the command line installs one when stderr
is a terminal (a progress line with what is sent, to which URL, and the time
elapsed); services and libraries never see one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

__all__ = ["Reporter", "exchange", "install"]

#: Called with (what, url) around one exchange; its context ends when the answer is in.
Reporter = Callable[[str, str], AbstractContextManager[None]]

_reporter: Reporter | None = None


def install(reporter: Reporter | None) -> None:
    """Report exchanges to ``reporter`` from now on (None: report nothing)."""
    global _reporter
    _reporter = reporter


@contextmanager
def exchange(what: str, url: str | None) -> Iterator[None]:
    """Around one round trip with the CA: ``what`` (ir, kur, genm...) sent to ``url``."""
    reporter = _reporter
    with reporter(what, url or "the CA") if reporter is not None else nullcontext():
        yield
