"""One renewal pass over the sessions (``swcmp renew``, and each pass of ``serve``):
decide what is due, renew it (one CA's sessions one after another, different CAs at
once), record the outcome, then the CA's side and the cleanups."""

from __future__ import annotations

import functools
import logging
import os
import subprocess
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from swcmp import fsutil
from swcmp.cmp import certs
from swcmp.cmp.text import safe
from swcmp.deploy import Charon
from swcmp.enroll import Outcome
from swcmp.errors import (
    LockHeldError,
    NeedsInitialRequest,
    NoChainError,
    RenewalError,
    SessionFileError,
    SwcmpError,
)
from swcmp.ha import Role
from swcmp.paths import Paths
from swcmp.policy import Plan, plan, retry_delay
from swcmp.renewal import Renewer
from swcmp.service import metrics_file
from swcmp.service.host import HostConfig, host_role
from swcmp.session import Session, hint_for
from swcmp.sessionfile import SessionStore, reads_sessions_once
from swcmp.state import SessionState, SessionStateName, StateStore

if TYPE_CHECKING:
    from swcmp.calife import CaLife
    from swcmp.metrics import CharonView

log = logging.getLogger(__name__)

#: Sessions of this many different CAs are renewed at the same time in one pass.
MAX_PARALLEL_CAS = 4


def _ca_endpoint(s: Session) -> str:
    """Which CA server a session talks to (scheme, host and port), for grouping."""
    from urllib.parse import urlsplit

    try:
        u = urlsplit(s.server_url or "")
        return f"{u.scheme}://{(u.hostname or '').lower()}:{u.port or ''}"
    except ValueError:
        return s.server_url or ""


def _retry_after(e: BaseException) -> float | None:
    """The Retry-After (seconds) of an HTTP 503/429 behind ``e``, if there is one."""
    from swcmp.errors import HTTPStatusError

    seen = 0
    cur: BaseException | None = e
    while cur is not None and seen < 8:
        if isinstance(cur, HTTPStatusError) and cur.retry_after is not None:
            return cur.retry_after
        cur, seen = cur.__cause__, seen + 1
    return None


def _no_chain(e: BaseException) -> bool:
    """Whether ``e`` (or what it was raised from) says a certificate the CA issued does
    not chain to the session's anchors."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, NoChainError):
            return True
        seen = seen.__cause__
    return False


def _with_hint(e: SwcmpError, name: str) -> str:
    """The error's message and, when it has one, what to do (once, not twice)."""
    message = str(e.args[0]) if e.args else str(e)
    hint = hint_for(e, name)
    return f"{message} (hint: {hint})" if hint else message



class _Serials(Collection[int]):
    """Certificate serials read only when first asked for: a key store with nothing to
    collect (the file store, a token without retired objects) never asks."""

    def __init__(self, read: Callable[[], list[int]]) -> None:
        self._read = read
        self._serials: list[int] | None = None

    def _get(self) -> list[int]:
        if self._serials is None:
            self._serials = self._read()
        return self._serials

    def __contains__(self, x: object) -> bool:
        return x in self._get()

    def __iter__(self) -> Iterator[int]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


@dataclass
class SessionReport:
    """One session's outcome in a pass."""

    session: str
    result: str  # renewed, skipped, failed, standby, dry-run
    message: str
    outcome: Outcome | None = None
    plan: Plan | None = None

    def to_json(self) -> dict[str, object]:
        return {"session": self.session, "result": self.result, "message": self.message,
                "renewal": self.outcome.to_json() if self.outcome else None,
                "renew_at": self.plan.renew_at.isoformat() if self.plan and self.plan.renew_at
                else None}


def load_cert(paths: Paths, name: str) -> x509.Certificate | None:
    p = paths.cert_file(name)
    try:
        return certs.load_certificate(p.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, SwcmpError) as e:
        log.warning("%s: cannot read %s: %s", name, p, e)
        return None


class PassFiles:
    """A session's state and certificate as one pass reads them, each read and parsed once
    while its file stays unchanged (the same inode, size and modification time: swcmp
    replaces these files, never rewrites them in place), and again when it changed.

    What it returns is shared: read it, never change it (a change goes through
    :meth:`StateStore.update`, which reads the file itself).
    """

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self._states = StateStore(paths)
        self._seen_states: dict[str, tuple[tuple[int, int, int], SessionState]] = {}
        self._seen_certs: dict[str, tuple[tuple[int, int, int], x509.Certificate]] = {}

    def state(self, name: str) -> SessionState:
        if self._states.unwritten(name):  # what this process could not write (a full disk)
            return self._states.load(name)
        stamp = fsutil.file_stamp(self._states.path(name))
        seen = self._seen_states.get(name)
        if stamp is not None and seen is not None and seen[0] == stamp:
            return seen[1]
        st = self._states.load(name)
        if stamp is not None:
            self._seen_states[name] = (stamp, st)
        return st

    def cert(self, name: str) -> x509.Certificate | None:
        stamp = fsutil.file_stamp(self.paths.cert_file(name))
        seen = self._seen_certs.get(name)
        if stamp is not None and seen is not None and seen[0] == stamp:
            return seen[1]
        cert = load_cert(self.paths, name)
        if stamp is not None and cert is not None:
            self._seen_certs[name] = (stamp, cert)
        return cert


def _archived_cert(paths: Paths, name: str, serial: str) -> x509.Certificate | None:
    """The session's replaced certificate with ``serial`` (hex) from its archive."""
    from swcmp.store import Journal, archived_pairs

    try:
        found = archived_pairs(Journal(paths, name), int(serial, 16))
    except ValueError:
        return None
    return found[0][0] if found else None


@dataclass
class RenewalService:
    """Decides and runs renewals for all sessions; shared by ``renew`` and ``serve``."""

    paths: Paths
    #: Where renewed pairs, CA certificates and CRLs go (None: files only).
    charon: Charon | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    host: HostConfig = field(default_factory=HostConfig)
    #: charon is deliberately left as it is (--no-deploy): it may still use a replaced
    #: key, so replaced key pairs are kept for a later pass.
    no_deploy: bool = False
    #: After a pass: when the next session needs attention (None: none does).
    next_check: datetime | None = None
    #: The HA role read by the last pass.
    role: Role = field(default_factory=lambda: Role(None, False))
    #: Session files the last listing could not read: each is that session's failure.
    broken: tuple[SessionFileError, ...] = ()
    #: Called as each session's renewal or CA questions begin (serve's pass process
    #: tells serve that it makes progress); from the pass's threads.
    on_step: Callable[[], None] | None = None

    def _step(self) -> None:
        if self.on_step is not None:
            self.on_step()

    def renewer(self, s: Session) -> Renewer:
        return Renewer(self.paths, charon=self.charon, clock=self.clock,
                       charon_untouched=self.no_deploy)

    def sessions(self, names: Sequence[str] = ()) -> list[Session]:
        store = SessionStore(self.paths.config_dir)
        if names:
            return [store.load(n) for n in names]
        listing = store.list()
        for err in listing.errors:
            log.error("skipping a broken session file: %s", err)
        self.broken = listing.errors
        return list(listing.sessions)

    @reads_sessions_once
    def run_pass(self, names: Sequence[str] = (), *, due_only: bool = True,
                 force: bool = False, dry_run: bool = False) -> list[SessionReport]:
        """One pass over the sessions: renew what is due (or everything with ``force``)."""
        from swcmp.renewal import damaged_journal, interrupted

        reports: list[SessionReport] = []
        todo: list[tuple[int, Session, Plan]] = []
        self.role = host_role(self.host)
        standby = self.role.standby
        files = PassFiles(self.paths)
        for s in self.sessions(names):
            now = self.clock()
            try:
                st = files.state(s.name)
                p = plan(s, files.cert(s.name), st, now)
                # A renewal confirmed at the CA but not yet committed is finished at
                # once, whatever the schedule says (it needs no CA contact).
                pending = interrupted(self.paths, s.name)
            except Exception as e:  # a damaged file of one session is that session's failure
                log.error("%s: cannot plan its renewal: %s: %s", s.name, type(e).__name__, e)
                reports.append(SessionReport(s.name, "failed",
                                             f"cannot read its files: {type(e).__name__}: {e}"))
                continue
            damaged = pending == "unreadable"
            if pending not in ("confirmed", "committing"):
                pending = None
            if standby:
                self._set_state(s.name, "standby")
                reports.append(SessionReport(s.name, "standby", self.role.standby_reason(),
                                             plan=p))
                continue
            wanted = force or pending is not None or (p.due if due_only else
                                                      p.state not in ("needs_ir",))
            if not force and not names and not s.auto_update and pending is None:
                wanted = False
            if p.state == "needs_ir" and pending is None:
                reports.append(SessionReport(s.name, "failed" if s.auto_update else "skipped",
                                             p.reason, plan=p))
                self._set_state(s.name, "needs_ir")
                continue
            if not wanted and damaged and (s.auto_update or names):
                # not due yet, but no renewal can run: never silent (when due, the
                # renewal itself fails on the journal and backs off)
                problem = damaged_journal(self.paths, s.name)
                log.error("%s: %s", s.name, problem)
                reports.append(SessionReport(
                    s.name, "failed",
                    f"its renewal journal is damaged, no renewal can run: {problem}", plan=p))
                continue
            if not wanted:
                reports.append(SessionReport(s.name, "skipped", p.reason, plan=p))
                continue
            if dry_run:
                reports.append(SessionReport(s.name, "dry-run",
                                             f"would renew ({p.reason})", plan=p))
                continue
            reports.append(SessionReport(s.name, "pending", "", plan=p))
            todo.append((len(reports) - 1, s, p))
        for i, report in self._renew_by_ca(todo):
            reports[i] = report
        if not names:
            # a typo in a session file is never silent: the session failed, not skipped
            for err in self.broken:
                where = f" (line {err.line})" if err.line else ""
                reports.append(SessionReport(
                    Path(err.path).stem, "failed",
                    f"its session file {err.path}{where} is broken: "
                    f"{err.args[0] if err.args else err}"))
        ca_due: list[datetime] = []
        if not dry_run and not standby:
            self.unload_stale_keys()
            self.collect_replaced_keys()
            if due_only and not names:  # serve and `renew --due`: the CA's weekly questions
                ca_due = self._ca_life_pass(files)
        seen = self._survey(files)  # once, after the renewals: for the metrics and the schedule
        self.write_metrics(seen)
        self.next_check = min([t for t in [self._earliest(seen), *ca_due] if t is not None],
                              default=None)
        return reports

    def _ca_life_pass(self, files: PassFiles | None = None) -> list[datetime]:
        """CA certificates, root CA update, CRL, pending revocations (see swcmp.calife)
        for sessions with auto-update; returns when each needs attention next.

        A session whose renewals are failing (in backoff) is left out: its CA is not
        asked more than the retries already ask it. One CA's sessions are handled one
        after another, different CAs at once, as renewals are.
        """
        life = self.ca_life()
        files = files or PassFiles(self.paths)
        groups: dict[str, list[Session]] = {}
        for s in self.sessions():
            if s.auto_update and files.state(s.name).failures == 0:
                groups.setdefault(_ca_endpoint(s), []).append(s)

        def run(group: list[Session]) -> list[datetime]:
            due: list[datetime] = []
            for s in group:
                self._step()
                try:
                    # logs what it did and what failed
                    t = life.maintain_then_next_due(s)[1]
                except SwcmpError as e:
                    log.warning("%s: CA maintenance failed: %s", s.name, e)
                    continue
                except Exception as e:  # one session's surprise must not end the pass
                    log.error("%s: CA maintenance failed unexpectedly: %s", s.name, e,
                              exc_info=log.isEnabledFor(logging.DEBUG))
                    continue
                if t is not None:
                    due.append(max(t, self.clock() + timedelta(minutes=1)))
            return due

        if len(groups) <= 1:
            return [t for g in groups.values() for t in run(g)]
        out: list[datetime] = []
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_CAS, len(groups)),
                                thread_name_prefix="swcmp-ca-life") as pool:
            for result in pool.map(run, groups.values()):
                out.extend(result)
        return out

    def _renew_by_ca(self, todo: Sequence[tuple[int, Session, Plan]]
                     ) -> list[tuple[int, SessionReport]]:
        """Renew ``todo``: one CA's sessions one after another, different CAs at once.

        A CA that answers slowly (or not at all) then holds only its own sessions,
        each attempt for at most its bound (see :func:`attempt_bound`), never the
        sessions of other CAs. The same CA is not asked twice at once: OpenSSL's
        server, for one, serves one connection at a time.
        """
        groups: dict[str, list[tuple[int, Session, Plan]]] = {}
        for item in todo:
            groups.setdefault(_ca_endpoint(item[1]), []).append(item)

        def run(group: list[tuple[int, Session, Plan]]) -> list[tuple[int, SessionReport]]:
            done = []
            for i, s, p in group:
                self._step()
                done.append((i, self.renew_one(s, p)))
            return done

        if len(groups) <= 1:
            return [r for g in groups.values() for r in run(g)]
        done: list[tuple[int, SessionReport]] = []
        workers = min(MAX_PARALLEL_CAS, len(groups))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="swcmp-ca") as pool:
            for result in pool.map(run, groups.values()):
                done.extend(result)
        return done

    def unload_stale_keys(self) -> None:
        """Unload old pinned-mode keys that no IKE SA made with the old config needs."""
        if self.charon is None:
            return
        self.charon.unload_stale_keys(self.sessions())

    def collect_replaced_keys(self) -> None:
        """Let each session's key store forget key pairs replaced by a renewal once charon
        no longer holds them (pinned mode: after the stale-key cleanup above unloaded the
        old key) and no queued revocation needs them."""
        from swcmp import keystore
        from swcmp.renewal import revocations_waiting

        if self.no_deploy:
            return
        held = self.charon.held_key_ids if self.charon is not None else None
        for s in self.sessions():
            store = keystore.open(s, self.paths)  # reads nothing yet
            if not store.collects:
                continue  # a key file's archive: nothing to collect, no lock to take
            try:
                # under the session's renewal lock: a renewal of another process could
                # otherwise retire, stage or roll back a pair while this reads the lists
                with fsutil.exclusive_lock(self.paths.lock_dir, s.name, blocking=False,
                                           what=f"renewal of session {s.name}"):
                    store.collect(
                        held, keep_serials=_Serials(functools.partial(revocations_waiting,
                                                                      self.paths, s.name)))
            except LockHeldError:
                log.debug("%s: a renewal runs; replaced key pairs are collected by a later "
                          "pass", s.name)
            except SwcmpError as e:
                log.warning("%s: replaced key pairs not collected: %s", s.name, e)

    def renew_now(self, s: Session, *, p: Plan | None = None,
                  regenerate: bool | None = None, log_failure: bool = True) -> Outcome:
        """Renew ``s`` now (a KUR, or finish an interrupted renewal) and record it.

        On failure the state gets the error, the failure count and the time of
        the next retry (backoff), and the error is raised (and logged, unless
        ``log_failure`` is off because the caller prints it). Another run
        holding the session's lock is not counted as a failure.
        """
        from swcmp.errors import LockHeldError

        states = StateStore(self.paths)
        self._set_state(s.name, "in_progress")
        now = self.clock()
        replaced = load_cert(self.paths, s.name)
        try:
            try:
                outcome = self.renewer(s).renew(s, regenerate=regenerate)
            except SwcmpError:
                raise
            except Exception as e:  # one session's bug must not stop the others
                # A bug, or something swcmp did not foresee: record it as a failure like
                # any other (with backoff) instead of dying with the state "in_progress".
                log.debug("%s: the renewal raised:", s.name, exc_info=True)
                raise RenewalError(
                    f"internal error during the renewal: {type(e).__name__}: "
                    f"{safe(str(e))[:300]}").with_hint(
                    "the live key and certificate are unchanged; run with -v for the "
                    "traceback and report it") from e
        except LockHeldError:
            raise
        except SwcmpError as e:
            p, delay = self._record_failure(s, e, p=p, now=now)
            if _no_chain(e):
                self._ask_root_update(s)
            # Louder as expiry nears: past half of the time between due and expiry.
            loud = (p.expires is not None and p.renew_at is not None
                    and p.expires - now < (p.expires - p.renew_at) / 2)
            if log_failure:
                (log.error if loud else log.warning)(
                    "%s: renewal failed: %s; next try in %s", s.name, _with_hint(e, s.name), delay)
            raise
        with states.update(s.name) as st:
            st.failures = 0
            st.next_attempt = None
            st.state = "idle"
            st.charon = outcome.charon
            st.record("kur", True, outcome.message, now=now, serial=outcome.serial)
            st.count_renewal()
        # The CA's side of a renewal: its certificates, the superseded one's revocation.
        # Reported, never undoing the renewal: whatever it raises is logged here.
        if outcome.replaced_serial is not None and (
                replaced is None or f"{replaced.serial_number:x}" != outcome.replaced_serial):
            # an earlier run was killed after it wrote the new certificate: the one it
            # replaced is in the archive
            replaced = _archived_cert(self.paths, s.name, outcome.replaced_serial) or replaced
        try:
            self.ca_life().after_renewal(s, replaced, outcome.serial)
        except Exception as e:  # the renewal is committed: its report stands
            log.error("%s: the CA steps after the renewal failed: %s", s.name, e,
                      exc_info=log.isEnabledFor(logging.DEBUG))
        self._run_hooks(s, outcome)
        return outcome

    def _record_failure(self, s: Session, e: SwcmpError, *, p: Plan | None,
                        now: datetime) -> tuple[Plan, timedelta]:
        """Record a failed renewal of ``s`` in its state: the error, the failure count and
        the next retry (backoff); returns the plan and the wait until that retry."""
        states = StateStore(self.paths)
        if p is None:
            p = plan(s, load_cert(self.paths, s.name), states.load(s.name), now)
        expires = p.expires or now + timedelta(days=1)
        delay = retry_delay(0, now=now, not_after=expires)
        try:
            with states.update(s.name) as st:
                st.failures += 1
                delay = retry_delay(st.failures, now=now, not_after=expires,
                                    retry_after=_retry_after(e))
                st.next_attempt = (now + delay).isoformat(timespec="seconds")
                st.state = "needs_ir" if isinstance(e, NeedsInitialRequest) else "failed"
                st.record("kur", False, _with_hint(e, s.name), now=now)
                from swcmp.metrics import failure_key  # only for a failure: ~3 ms to import

                st.count_renewal(failure_key(e))
        except SwcmpError as state_error:
            log.error("%s: cannot record the failure: %s", s.name, state_error)
        return p, delay

    def record_dead_pass(self, why: str) -> list[str]:
        """After the process that ran a pass died: each session it left ``in_progress``
        (a renewal it had begun) that no other run is renewing gets the death recorded
        as a failed renewal, with backoff, so that status, the metrics and the alerts
        see it as any other failure. The renewal's journal stays: the next attempt
        finishes or resumes it. Returns the sessions so recorded."""
        recorded: list[str] = []
        states = StateStore(self.paths)
        for s in self.sessions():
            try:
                if states.load(s.name).state != "in_progress":
                    continue
                with fsutil.exclusive_lock(self.paths.lock_dir, s.name, blocking=False,
                                           what=f"renewal of session {s.name}"):
                    if states.load(s.name).state != "in_progress":
                        continue  # the run that held the lock until now finished it
                    self._record_failure(s, RenewalError(why).with_hint(
                        "the live key and certificate are unchanged; the next attempt "
                        "finishes or resumes the renewal from its journal"),
                        p=None, now=self.clock())
            except LockHeldError:
                continue  # another run (a request by hand) is renewing it now
            except SwcmpError as e:
                log.error("%s: cannot record the failed pass: %s", s.name, e)
                continue
            log.error("%s: renewal failed: %s", s.name, why)
            recorded.append(s.name)
        return recorded

    def _ask_root_update(self, s: Session) -> None:
        """After the CA's certificate was refused: a root rollover the weekly question
        has not heard of yet would refuse every retry (see CaLife.after_refused_certificate)."""
        try:
            found = self.ca_life().after_refused_certificate(s)
        except SwcmpError as e:
            log.warning("%s: root CA update after the refused certificate: %s", s.name, e)
            return
        if found is not None:
            log.info("%s: root CA update after the refused certificate: %s", s.name, found)

    def ca_life(self) -> CaLife:
        from swcmp.calife import CaLife

        return CaLife(self.paths, charon=self.charon, clock=self.clock)

    def renew_one(self, s: Session, p: Plan | None = None) -> SessionReport:
        """:meth:`renew_now` for a pass: failures become a report instead of an error."""
        try:
            outcome = self.renew_now(s, p=p)
        except SwcmpError as e:
            return SessionReport(s.name, "failed", _with_hint(e, s.name), plan=p)
        return SessionReport(s.name, "renewed", outcome.message, outcome=outcome, plan=p)

    def _set_state(self, name: str, state: SessionStateName) -> None:
        try:
            with StateStore(self.paths).update(name) as st:
                st.state = state
        except SwcmpError as e:
            log.warning("%s: cannot record state: %s", name, e)

    def run_hooks(self, s: Session, outcome: Outcome) -> None:
        """The post-renew hooks for a new certificate of ``s`` (also after a manual IR/CR)."""
        self._run_hooks(s, outcome)

    def _run_hooks(self, s: Session, outcome: Outcome) -> None:
        env = dict(os.environ, SWCMP_SESSION=s.name, SWCMP_SERIAL=outcome.serial or "",
                   SWCMP_CERT=str(outcome.cert_path or ""), SWCMP_KEY=str(outcome.key_path or ""))
        for cmd in self.host.post_renew:
            try:
                res = subprocess.run(cmd, shell=True, env=env, timeout=120, check=False,
                                     capture_output=True, text=True)
            except (OSError, subprocess.TimeoutExpired) as e:
                log.warning("%s: post-renew hook %r failed: %s", s.name, cmd, e)
                continue
            if res.returncode != 0:
                log.warning("%s: post-renew hook %r exited %d: %s", s.name, cmd,
                            res.returncode, res.stderr.strip()[:500])

    def _survey(self, files: PassFiles | None = None
                ) -> list[tuple[Session, x509.Certificate | None, SessionState, Plan]]:
        """Every session with its certificate, state and plan (``files``: what the pass
        read before, re-read where it changed)."""
        now = self.clock()
        files = files or PassFiles(self.paths)
        seen = []
        for s in self.sessions():
            try:
                cert, st = files.cert(s.name), files.state(s.name)
                seen.append((s, cert, st, plan(s, cert, st, now)))
            except Exception as e:  # one session's damaged files must not end serve
                log.error("%s: cannot read its state: %s: %s", s.name, type(e).__name__, e)
        return seen

    @staticmethod
    def _earliest(seen: Sequence[tuple[Session, x509.Certificate | None, SessionState, Plan]]
                  ) -> datetime | None:
        times = [p.next_check for s, _, _, p in seen if p.next_check is not None and s.auto_update]
        return min(times) if times else None

    def write_metrics(
        self,
        seen: Sequence[tuple[Session, x509.Certificate | None, SessionState, Plan]] | None = None,
    ) -> None:
        """The Prometheus textfile (see :mod:`swcmp.metrics`), written atomically."""
        if self.host.metrics_file is None:
            return
        seen = seen if seen is not None else self._survey()
        metrics_file.write(self.host.metrics_file, self.paths, self.role, seen,
                           self._charon_view,
                           unreadable=[Path(e.path).stem for e in self.broken],
                           now=self.clock())

    def refresh_metrics(self) -> None:
        """Re-read the role, the sessions and charon, and rewrite the metrics file."""
        if self.host.metrics_file is None:
            return
        self.role = host_role(self.host)
        self.write_metrics()

    def _charon_view(self) -> CharonView | None:
        """Which certificates charon holds keys for; None when swcmp does not talk to it."""
        return metrics_file.charon_view(self.charon)
