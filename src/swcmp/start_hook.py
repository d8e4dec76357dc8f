"""``swcmp hook charon-start``: after charon (re)starts, finish any renewal a crash
interrupted, then load every session's current pair into it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime

from swcmp import fsutil, keystore
from swcmp.deploy import Charon
from swcmp.errors import SwcmpError
from swcmp.paths import Paths
from swcmp.renewal import Renewer
from swcmp.session import Session
from swcmp.sessionfile import SessionStore
from swcmp.state import StateStore

log = logging.getLogger(__name__)


@contextmanager
def _session_lock(paths: Paths, name: str, timeout: float) -> Iterator[bool]:
    """Hold ``name``'s renewal lock, waiting up to ``timeout`` s; yield whether it is held."""
    from swcmp.errors import LockHeldError

    fsutil.ensure_dir(paths.lock_dir, mode=0o700)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with fsutil.exclusive_lock(paths.lock_dir, name, blocking=False,
                                       what=f"renewal of session {name}"):
                yield True
                return
        except LockHeldError:
            if time.monotonic() >= deadline:
                yield False
                return
            time.sleep(0.2)


def charon_start(paths: Paths, charon: Charon, *, lock_wait: float = 20.0) -> str:
    """What ``swcmp hook charon-start`` does: finish commits, then load every pair.

    Each session's renewal lock is held from finishing an interrupted commit to
    loading its pair, so that a renewal running at the same moment cannot slip
    its new pair into charon before this hook loads the older one over it. A
    renewal still holding its lock after ``lock_wait`` seconds deploys its own
    pair when it finishes; the files as they are now are loaded meanwhile.
    """
    from swcmp.store import Journal

    finished: list[str] = []
    pairs = []
    sessions = SessionStore(paths.config_dir).list().sessions
    with ExitStack() as locks:
        for s in sessions:
            if not locks.enter_context(_session_lock(paths, s.name, lock_wait)):
                log.warning("%s: a renewal is running; loading the current files (the "
                            "renewal loads its new pair when it finishes)", s.name)
            else:
                try:
                    entry = Journal(paths, s.name).load()
                except SwcmpError as e:
                    log.error("%s: %s", s.name, e)
                    entry = None
                if entry and entry.phase in ("confirmed", "committing"):
                    try:
                        # no deployer: this hook loads the result itself, below
                        outcome = Renewer(paths).finish_locked(s)
                        finished.append(s.name)
                    except SwcmpError as e:
                        log.error("%s: could not finish the interrupted renewal: %s",
                                  s.name, e)
                    else:
                        with StateStore(paths).update(s.name) as st:
                            st.failures = 0
                            st.next_attempt = None
                            st.state = "idle"
                            st.record("kur", True, "finished by the charon start hook: "
                                      + outcome.message, now=datetime.now(UTC),
                                      serial=outcome.serial)
                            st.count_renewal()
            try:
                pair = keystore.open(s, paths).live_pair()
            except SwcmpError as e:  # e.g. a token that is not there: load the others
                log.error("%s: not loaded: %s", s.name, e)
                pair = None
            if pair is not None:
                pairs.append(pair)
        result = charon.load_current(pairs)
        crls = _stored_crls(paths, sessions)
        if crls:
            try:
                charon.load_authorities([], crls)
            except SwcmpError as e:
                log.error("could not load the stored CRLs: %s", e)
        resent: list[str] = []
        for s in sessions:
            # pinned connections carry the certificate in their config: re-send them
            try:
                resent += charon.reload_pinned(s)
            except SwcmpError as e:
                log.error("%s: could not re-send its pinned connections: %s", s.name, e)
    note = f"; finished interrupted renewals of {', '.join(finished)}" if finished else ""
    if resent:
        note += f"; re-sent pinned connection(s) {', '.join(resent)}"
    return f"{result.detail}{note}"


def _stored_crls(paths: Paths, sessions: Sequence[Session]) -> list[bytes]:
    """The CRLs stored by swcmp for ``sessions`` (x509crl/<session>.crl)."""
    from swcmp.store import crl_file

    out = []
    for s in sessions:
        try:
            out.append(crl_file(paths, s.name).read_bytes())
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("%s: cannot read its CRL: %s", s.name, e)
    return out
