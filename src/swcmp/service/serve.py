"""``swcmp serve``: the loop that sleeps until something is due and runs a pass."""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from datetime import datetime
from types import FrameType

from swcmp import paths, sessionfile
from swcmp.cmp.text import safe
from swcmp.errors import SwcmpError
from swcmp.metrics import REFRESH
from swcmp.service.host import HostConfig
from swcmp.service.passes import RenewalService

log = logging.getLogger(__name__)

#: How often serve looks for changed session files while otherwise asleep.
RESCAN = 30.0


def give_back_freed_memory() -> bool:
    """Hand the heap a pass freed back to the system (glibc's ``malloc_trim``), so that
    an idle serve's RSS is what it holds, not the peak of its last pass (every session's
    file, certificate and state were read). False where the C library has no
    ``malloc_trim`` (then nothing happens)."""
    paths.forget_built_paths()
    sessionfile.forget_built_paths()
    gc.collect()
    try:
        import ctypes

        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


class Server:
    """``swcmp serve``: sleep until something is due, renew it, repeat.

    SIGHUP (or a changed session file) makes it look again at once; SIGTERM and
    SIGINT stop it after the session being renewed, if any, is finished (the
    journal would also recover a hard stop).
    """

    def __init__(self, service: RenewalService, *, rescan: float = RESCAN) -> None:
        self.service = service
        self.rescan = rescan
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._mtime: float | None = None

    def install_signals(self) -> None:
        def on_term(signum: int, frame: FrameType | None) -> None:
            log.info("stopping (signal %d)", signum)
            self.stopping.set()
            self.wake.set()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            log.info("SIGHUP: re-reading the sessions")
            self.wake.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)

    def _config_stamp(self) -> float:
        """Newest mtime of the session files, the host settings and the HA role file."""
        d = self.service.paths.sessions_dir
        files = [d, self.service.paths.config_dir / "swcmp.toml", *d.glob("*.toml")]
        if self.service.host.role_file is not None:
            files.append(self.service.host.role_file)
        stamp = 0.0
        for f in files:
            try:
                stamp = max(stamp, f.stat().st_mtime)
            except OSError:
                continue
        return stamp

    def run(self, *, once_until: datetime | None = None) -> None:
        """Serve until stopped (or until ``once_until``, for tests and the demo).

        Between passes it sleeps until the next session is due, waking every
        ``rescan`` seconds only to stat the configuration (cheap), so an idle
        service costs next to nothing.
        """
        log.info("swcmp serve: watching %s", self.service.paths.sessions_dir)
        self._mtime = self._config_stamp()
        due_pass = True
        nxt: datetime | None = None
        last_metrics = time.monotonic()
        while not self.stopping.is_set():
            if due_pass:
                try:
                    self.service.host = HostConfig.load(self.service.paths)
                    for r in self.service.run_pass(due_only=True):
                        # renewals and failures are logged where they happen
                        if r.result == "standby":
                            log.info("%s: %s", r.session, r.message)
                    nxt = self.service.next_check
                except SwcmpError as e:
                    log.error("renewal pass failed: %s", e)
                    nxt = None
                except Exception as e:  # the service outlives one bad pass
                    log.error("renewal pass failed unexpectedly: %s: %s (-v shows the "
                              "traceback)", type(e).__name__, safe(str(e))[:300])
                    log.debug("the renewal pass raised:", exc_info=True)
                    nxt = None
                last_metrics = time.monotonic()
                give_back_freed_memory()
            elif time.monotonic() - last_metrics >= REFRESH:
                self.service.refresh_metrics()  # charon's view and the role can change anytime
                last_metrics = time.monotonic()
            now = self.service.clock()
            if once_until is not None and now >= once_until:
                return
            wait = self.rescan
            if nxt is not None:
                wait = min(wait, max((nxt - now).total_seconds(), 1.0))
            if once_until is not None:
                wait = min(wait, max((once_until - now).total_seconds(), 0.1))
            log.debug("sleeping %.1fs", wait)
            woke = self.wake.wait(wait)
            self.wake.clear()
            stamp = self._config_stamp()
            changed = stamp != self._mtime
            if changed:
                log.info("configuration changed: re-reading the sessions")
                self._mtime = stamp
            due_pass = woke or changed or (nxt is not None and self.service.clock() >= nxt)
