"""Per-session state on disk: statistics, last result, renewal status.

One JSON file per session, ``<state_dir>/sessions/<name>/state.json``,
rewritten atomically. A damaged file is reported in the log and replaced by a
fresh state rather than stopping renewals: statistics are worth less than a
valid certificate.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from swcmp import fsutil
from swcmp.errors import SwcmpError
from swcmp.paths import Paths

log = logging.getLogger(__name__)

#: Request types counted per session, in display order.
REQUEST_TYPES = ("ir", "cr", "kur", "p10cr", "pollReq", "certConf", "genm", "rr")

#: Session states shown by ``swcmp status``.
#: What a session is doing, as ``status`` and the metrics show it.
SessionStateName = Literal["idle", "due", "in_progress", "polling", "failed", "standby",
                           "needs_ir", "disabled"]
STATES: tuple[SessionStateName, ...] = get_args(SessionStateName)


#: At most this many distinct failure keys are kept per session (the last place: "other:").
MAX_FAILURE_KEYS = 64


def empty_stats() -> dict[str, dict[str, int]]:
    return {t: {"sent": 0, "received": 0, "failed": 0} for t in REQUEST_TYPES}


@dataclass
class LastResult:
    """The outcome of the last request or renewal."""

    time: str
    action: str
    ok: bool
    message: str
    serial: str | None = None


#: Which "last result" an action is kept as: ``renewal`` (the certificate's own
#: requests: IR, CR, KUR; ``last_result``, which status and the renewal metrics
#: show), ``ca`` (questions to the CA: genm caCerts, rootCaCert, currentCRL) or
#: ``manual`` (revocations and anything else run by hand). A failed CA question or a
#: mistyped revocation thus never makes a healthy renewal look failing.
RESULT_KINDS: Mapping[str, str] = {
    "ir": "renewal", "cr": "renewal", "p10cr": "renewal", "kur": "renewal",
    "cacerts": "ca", "rootca": "ca", "crl": "ca", "rr": "manual",
}
OTHER_RESULTS = ("ca", "manual")


def result_kind(action: str) -> str:
    """The "last result" ``action`` belongs to (see :data:`RESULT_KINDS`)."""
    return RESULT_KINDS.get(action, "manual")


@dataclass
class SessionState:
    """Everything swcmp remembers about a session between runs.

    Attributes:
        state: one of :data:`STATES`.
        stats: per request type, how many were sent, answered and failed.
        last_result: what the last certificate request (IR, CR, KUR: the renewal)
            did.
        other_results: the last result of the other operations, by kind (``ca``
            for CA questions, ``manual`` for revocations; :data:`RESULT_KINDS`).
        failures: consecutive failed renewals (drives the backoff).
        next_attempt: ISO time before which no retry is made after a failure.
        charon: what the last deployment into charon did.
        last_success: ISO time of the last successful request or renewal.
        renewals: renewals attempted by result (``success``, ``failure``); like
            every counter, never reset (``stats reset`` leaves them alone).
        renewal_failures: failed renewals by ``error:fail_info`` key
            (:func:`swcmp.metrics.failure_key`).
        received: the serial (hex) of the last certificate swcmp received and the
            ISO time it arrived: the renewal floor counts from then
            (:func:`swcmp.policy.renewal_floor`).
    """

    state: SessionStateName = "idle"
    stats: dict[str, dict[str, int]] = field(default_factory=empty_stats)
    last_result: LastResult | None = None
    other_results: dict[str, LastResult] = field(default_factory=dict)
    failures: int = 0
    next_attempt: str | None = None
    charon: str | None = None
    last_success: str | None = None
    renewals: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})
    renewal_failures: dict[str, int] = field(default_factory=dict)
    received: dict[str, str] | None = None

    def received_at(self, serial: str) -> datetime | None:
        """When the certificate with ``serial`` (hex) arrived, if it is the last one."""
        if not self.received or self.received.get("serial") != serial:
            return None
        return _aware_time(self.received.get("time", ""))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionState:
        st = cls()
        state = data.get("state")
        if isinstance(state, str) and state in STATES:
            st.state = state
        stats = data.get("stats")
        if isinstance(stats, dict):
            for t, counts in stats.items():
                if t in st.stats and isinstance(counts, dict):
                    for k in ("sent", "received", "failed"):
                        v = counts.get(k)
                        if isinstance(v, int) and v >= 0:
                            st.stats[t][k] = v
        last = _last_result(data.get("last_result"))
        if last is not None:
            # Before results were kept per kind, a CA question or a revocation was the
            # last_result too: it moves to its own place.
            kind = result_kind(last.action)
            if kind == "renewal":
                st.last_result = last
            else:
                st.other_results[kind] = last
        others = data.get("other_results")
        if isinstance(others, dict):
            for kind in OTHER_RESULTS:
                other = _last_result(others.get(kind))
                if other is not None:
                    st.other_results[kind] = other
        if isinstance(data.get("failures"), int):
            st.failures = max(0, data["failures"])
        if isinstance(data.get("next_attempt"), str):
            # a time swcmp can compare, or none: a damaged value must not stop serve
            if _aware_time(data["next_attempt"]) is not None:
                st.next_attempt = data["next_attempt"]
            else:
                log.warning("state: next_attempt %r is not a time: retrying now",
                            data["next_attempt"][:40])
        if isinstance(data.get("charon"), str):
            st.charon = data["charon"]
        if isinstance(data.get("last_success"), str):
            st.last_success = data["last_success"]
        renewals = data.get("renewals")
        if isinstance(renewals, dict):
            for k in st.renewals:
                v = renewals.get(k)
                if isinstance(v, int) and v >= 0:
                    st.renewals[k] = v
        failures = data.get("renewal_failures")
        if isinstance(failures, dict):
            for k, v in list(failures.items())[:MAX_FAILURE_KEYS]:
                if isinstance(k, str) and ":" in k and isinstance(v, int) and v >= 0:
                    st.renewal_failures[k[:200]] = v
        received = data.get("received")
        if isinstance(received, dict) and isinstance(received.get("serial"), str) and \
                isinstance(received.get("time"), str):
            st.received = {"serial": received["serial"][:80], "time": received["time"][:40]}
        return st

    def count_renewal(self, failure: str | None = None) -> None:
        """Count one renewal: a success (``failure`` None) or a failure of that key."""
        if failure is None:
            self.renewals["success"] += 1
            return
        self.renewals["failure"] += 1
        # one place is kept for "other:", so that the map never exceeds MAX_FAILURE_KEYS
        if failure not in self.renewal_failures and \
                len(self.renewal_failures) >= MAX_FAILURE_KEYS - 1:
            failure = "other:"
        self.renewal_failures[failure] = self.renewal_failures.get(failure, 0) + 1

    def add_stats(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Fold a client's counters in: (event, request type) -> count.

        "received" counts answers to a request type, whatever the answer's body.
        """
        for (event, kind), n in counts.items():
            if kind in self.stats and event in ("sent", "received", "failed"):
                self.stats[kind][event] += n

    def record(self, action: str, ok: bool, message: str, *, now: datetime,
               serial: str | None = None) -> None:
        """Keep the outcome of ``action`` as the last result of its kind."""
        result = LastResult(now.isoformat(timespec="seconds"), action, ok, message, serial)
        if ok and serial:  # a certificate arrived (any request): the renewal floor counts
            self.received = {"serial": serial, "time": now.isoformat()}
        kind = result_kind(action)
        if kind != "renewal":
            self.other_results[kind] = result
            return
        self.last_result = result
        if ok:
            self.last_success = result.time


def _aware_time(value: str) -> datetime | None:
    """``value`` as an ISO 8601 time with an offset, or None."""
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def _last_result(data: object) -> LastResult | None:
    if not isinstance(data, dict) or not all(k in data for k in ("time", "action", "ok",
                                                                    "message")):
        return None
    return LastResult(time=str(data["time"]), action=str(data["action"]), ok=bool(data["ok"]),
                      message=str(data["message"]),
                      serial=str(data["serial"]) if data.get("serial") else None)


#: State files this process could not write (a full disk): their failure count and backoff
#: hold (else serve would retry such a session every pass).
_UNWRITTEN: fsutil.HeldWrites[SessionState] = fsutil.HeldWrites()


class StateStore:
    """Reads and writes :class:`SessionState` files."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths

    def path(self, name: str) -> Any:
        return self.paths.session_state_dir(name) / "state.json"

    def unwritten(self, name: str) -> bool:
        """Whether this process holds a state of ``name`` that it could not write."""
        return _UNWRITTEN.get(self.path(name)) is not None

    def load(self, name: str) -> SessionState:
        p = self.path(name)
        held = _UNWRITTEN.get(p)
        if held is not None:
            return held
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            return SessionState()
        except OSError as e:
            log.warning("cannot read %s (%s): starting from a fresh state", p, e.strerror)
            return SessionState()
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError as e:
            log.warning("state file %s is damaged (%s): starting from a fresh state", p, e)
            return SessionState()
        return SessionState.from_json(data)

    def save(self, name: str, st: SessionState) -> None:
        p = self.path(name)
        data = json.dumps(st.to_json(), indent=2, sort_keys=True).encode() + b"\n"
        try:
            fsutil.ensure_dir(p.parent, mode=0o700)
            fsutil.atomic_write(p, data, mode=0o600)
        except SwcmpError:
            _UNWRITTEN.hold(p, st)
            raise
        _UNWRITTEN.written(p)

    @contextmanager
    def update(self, name: str) -> Iterator[SessionState]:
        """Load, let the caller change, save; serialized per session."""
        fsutil.ensure_dir(self.paths.lock_dir, mode=0o700)
        with fsutil.exclusive_lock(self.paths.lock_dir, f"{name}.state", what="state of " + name):
            st = self.load(name)
            yield st
            self.save(name, st)

    def reset_stats(self, name: str) -> None:
        with self.update(name) as st:
            st.stats = empty_stats()
