"""``swcmp serve``: the loop that sleeps until something is due and runs a pass.

Each pass runs in a child process of its own (``os.fork``) that ends with the pass:
what a pass imports and allocates (the CMP stack, TLS, pyasn1, every session's
files; about 7 MiB with 100 sessions after a pass that asked the CA) goes with it,
and the resident process keeps only the loop. What a pass hands back: whether it ran,
when to look again, and the state files it could not write (a full disk), which the
next pass's process starts with, as one process running every pass would. A child that
dies (a signal, the out-of-memory killer, a bug) fails that pass, never the service.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import select
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any, NoReturn

from swcmp import paths, sessionfile, state
from swcmp.calife import state as calife_state
from swcmp.cmp.text import safe
from swcmp.errors import SwcmpError
from swcmp.metrics import REFRESH
from swcmp.policy import RETRY_START
from swcmp.service.host import HostConfig
from swcmp.service.passes import RenewalService

log = logging.getLogger(__name__)

#: How often serve looks for changed session files while otherwise asleep.
RESCAN = 30.0

#: A pass whose process has begun no session's renewal or CA questions for this many
#: seconds is stuck, and is killed (SIGKILL): the pass failed. Each such step has its
#: own bound well below this (with the longest timeout a session may set, 600 s an
#: exchange: a renewal attempt 45 minutes, the CA's questions about an hour), so only a
#: bug gets here. An interrupted renewal is finished from its journal later, as after
#: any hard stop.
PASS_LIMIT = 3 * 3600.0

#: What the pass's process writes to serve as each step begins.
_STEP = b"*"

#: After a failed pass, serve tries again this much later (or at once on SIGHUP or a
#: changed session file): the first step of a failed renewal's backoff.
PASS_RETRY = RETRY_START

#: What a pass's process writes back to serve at most (its result and the states it
#: could not write).
_RESULT_MAX = 256 * 1024 * 1024

#: Marks the start of the result, after the steps.
_RESULT = b"R"


@dataclass
class _PassResult:
    """What the pass's process hands back to serve: whether the pass ran, when to look
    again, and the state files it could not write (a full disk), held by serve for the
    next pass's process as a process that runs every pass would hold them (see
    :data:`swcmp.state._UNWRITTEN`), so that a failing session's backoff holds."""

    ok: bool
    next_check: datetime | None
    unwritten: dict[str, Any]
    calife_unwritten: dict[str, Any]


def _serves_own(signum: int, frame: FrameType | None) -> None:
    """A signal for serve, not for its pass's process: nothing happens in the latter."""


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
    SIGINT stop it after the pass being run, if any, is finished (the journal
    would also recover a hard stop). Each pass runs in a process of its own
    (``separate_passes``); one that fails or dies is retried after
    :data:`PASS_RETRY`.
    """

    def __init__(self, service: RenewalService, *, rescan: float = RESCAN,
                 separate_passes: bool = True) -> None:
        self.service = service
        self.rescan = rescan
        #: Each pass in a child process of its own (see the module's docstring); off,
        #: the pass runs in this process (for tests that look into the service).
        self.separate_passes = separate_passes
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

    def _pass(self) -> tuple[bool, datetime | None]:
        """One pass in this process: whether it ran, and when to look again."""
        try:
            self.service.host = HostConfig.load(self.service.paths)
            for r in self.service.run_pass(due_only=True):
                # renewals and failures are logged where they happen
                if r.result == "standby":
                    log.info("%s: %s", r.session, r.message)
            return True, self.service.next_check
        except SwcmpError as e:
            log.error("renewal pass failed: %s", e)
        except Exception as e:  # the service outlives one bad pass
            log.error("renewal pass failed unexpectedly: %s: %s (-v shows the "
                      "traceback)", type(e).__name__, safe(str(e))[:300])
            log.debug("the renewal pass raised:", exc_info=True)
        return False, None

    def _pass_apart(self) -> tuple[bool, datetime | None]:
        """:meth:`_pass` in a child process that ends with it; its death fails the pass."""
        try:
            # this process's copy too: the metrics refresh between passes reads it
            self.service.host = HostConfig.load(self.service.paths)
        except SwcmpError as e:
            log.error("renewal pass failed: %s", e)
            return False, None
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # nothing buffered is written twice
        r, w = os.pipe()
        try:
            pid = os.fork()
        except OSError as e:
            os.close(r)
            os.close(w)
            log.error("renewal pass failed: cannot start its process: %s", e)
            return False, None
        if pid == 0:  # the pass's process
            os.close(r)
            self._run_child(w)
        os.close(w)
        return self._wait_child(pid, r)

    def _died(self, why: str) -> tuple[bool, datetime | None]:
        """After a pass's process died (``why``): a renewal it left unfinished is that
        session's failed attempt (state, backoff, metrics); the pass failed."""
        try:
            self.service.record_dead_pass(why)
            self.service.refresh_metrics()
        except Exception as e:
            log.warning("cannot record the failed pass: %s: %s", type(e).__name__,
                        safe(str(e))[:300])
        return False, None

    def _run_child(self, w: int) -> NoReturn:
        """The pass's process: run it, write the result line to ``w``, exit."""
        code = 70  # EX_SOFTWARE: no result line
        try:
            # serve's own signals are the parent's: a SIGTERM (systemd sends it to the
            # whole group) lets the pass finish, as it always did; SIGHUP wakes serve.
            # A handler that does nothing, not SIG_IGN: an ignored signal stays ignored
            # across exec, and the hooks (and what they start) would ignore SIGTERM.
            # Restarting: a token's library in a system call does not see EINTR.
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(ValueError):  # main thread only; else as inherited
                    signal.signal(sig, _serves_own)
                    signal.siginterrupt(sig, False)

            def step() -> None:
                with contextlib.suppress(OSError):  # serve is gone: the pass goes on
                    os.write(w, _STEP)

            self.service.on_step = step
            ok, nxt = self._pass()
            # serve's own child reads it from a private pipe: pickle is safe here
            out = _RESULT + pickle.dumps(_PassResult(ok, nxt, dict(state._UNWRITTEN.held),
                                                     dict(calife_state._UNWRITTEN.held)))
            with os.fdopen(w, "wb") as f:
                f.write(out)
            code = 0
        except BaseException as e:
            log.error("renewal pass failed unexpectedly: %s", type(e).__name__)
            log.debug("the renewal pass raised:", exc_info=True)
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)

    def _wait_child(self, pid: int, r: int) -> tuple[bool, datetime | None]:
        """Wait for the pass in process ``pid`` while it makes progress (a step at least
        every :data:`PASS_LIMIT` seconds) and read its result from ``r``; log a pass that
        died, was killed or said nothing."""
        deadline = time.monotonic() + PASS_LIMIT
        out = bytearray()  # grows in place: bytes += would copy it all for each chunk
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error("renewal pass stuck: no progress for %.0f s; its process %d "
                              "is killed (an interrupted renewal is finished from its "
                              "journal later)", PASS_LIMIT, pid)
                    os.kill(pid, signal.SIGKILL)
                    break
                ready, _, _ = select.select([r], [], [], left)
                if ready:
                    chunk = os.read(r, 1 << 16)
                    if not chunk:
                        break  # the child ended
                    deadline = time.monotonic() + PASS_LIMIT
                    if not out:
                        chunk = chunk.lstrip(_STEP)  # steps come before the result only
                    out += chunk
                    if len(out) > _RESULT_MAX:
                        break  # not what a pass's process writes; it is waited for below
        except Exception as e:  # e.g. MemoryError: the pass is stopped, never left behind
            log.error("renewal pass failed: cannot read what its process %d says: %s; it "
                      "is killed", pid, type(e).__name__)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            out = bytearray()
        finally:
            os.close(r)
        _, status, usage = os.wait4(pid, 0)
        log.debug("the pass's process %d ended: %.2f s CPU, peak RSS %.1f MiB", pid,
                  usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            why = (f"the process of serve's pass was killed by signal {sig} "
                   f"({signal.strsignal(sig) or 'unknown'})")
            log.error("renewal pass failed: its process %d was killed by signal %d (%s); "
                      "an interrupted renewal is finished from its journal by the next pass",
                      pid, sig, signal.strsignal(sig) or "unknown")
            return self._died(why)
        code = os.waitstatus_to_exitcode(status)
        result: object = None
        if out.startswith(_RESULT):
            try:
                result = pickle.loads(memoryview(out)[len(_RESULT):])
            except Exception as e:
                log.debug("the pass's result cannot be read: %s", e)
        if code != 0 or not isinstance(result, _PassResult):
            log.error("renewal pass failed: its process %d exited with code %d without a "
                      "result (-v shows why)", pid, code)
            return self._died(f"the process of serve's pass exited with code {code}")
        # what the pass could not write, as it left it: the next pass's process has it
        for held, back in ((state._UNWRITTEN.held, result.unwritten),
                           (calife_state._UNWRITTEN.held, result.calife_unwritten)):
            held.clear()
            held.update(back)
        return result.ok, result.next_check

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
                ok, nxt = self._pass_apart() if self.separate_passes else self._pass()
                if not ok:
                    nxt = self.service.clock() + PASS_RETRY
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
