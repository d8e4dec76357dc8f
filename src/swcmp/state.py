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
from typing import Any

from swcmp import fsutil
from swcmp.config import Paths

log = logging.getLogger(__name__)

#: Request types counted per session, in display order.
REQUEST_TYPES = ("ir", "cr", "kur", "p10cr", "pollReq", "certConf", "genm", "rr")

#: Session states shown by ``swcmp status``.
STATES = ("idle", "due", "in_progress", "polling", "failed", "standby", "needs_ir",
          "disabled")


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


@dataclass
class SessionState:
    """Everything swcmp remembers about a session between runs.

    Attributes:
        state: one of :data:`STATES`.
        stats: per request type, how many were sent, answered and failed.
        last_result: what the last request or renewal did.
        failures: consecutive failed renewals (drives the backoff).
        next_attempt: ISO time before which no retry is made after a failure.
        charon: what the last deployment into charon did.
    """

    state: str = "idle"
    stats: dict[str, dict[str, int]] = field(default_factory=empty_stats)
    last_result: LastResult | None = None
    failures: int = 0
    next_attempt: str | None = None
    charon: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionState:
        st = cls()
        if isinstance(data.get("state"), str) and data["state"] in STATES:
            st.state = data["state"]
        stats = data.get("stats")
        if isinstance(stats, dict):
            for t, counts in stats.items():
                if t in st.stats and isinstance(counts, dict):
                    for k in ("sent", "received", "failed"):
                        v = counts.get(k)
                        if isinstance(v, int) and v >= 0:
                            st.stats[t][k] = v
        lr = data.get("last_result")
        if isinstance(lr, dict) and all(k in lr for k in ("time", "action", "ok", "message")):
            st.last_result = LastResult(
                time=str(lr["time"]), action=str(lr["action"]), ok=bool(lr["ok"]),
                message=str(lr["message"]),
                serial=str(lr["serial"]) if lr.get("serial") else None)
        if isinstance(data.get("failures"), int):
            st.failures = max(0, data["failures"])
        if isinstance(data.get("next_attempt"), str):
            st.next_attempt = data["next_attempt"]
        if isinstance(data.get("charon"), str):
            st.charon = data["charon"]
        return st

    def add_stats(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Fold a client's counters in: (event, request type) -> count.

        "received" counts answers to a request type, whatever the answer's body.
        """
        for (event, kind), n in counts.items():
            if kind in self.stats and event in ("sent", "received", "failed"):
                self.stats[kind][event] += n

    def record(self, action: str, ok: bool, message: str, *, now: datetime,
               serial: str | None = None) -> None:
        self.last_result = LastResult(now.isoformat(timespec="seconds"), action, ok,
                                      message, serial)


class StateStore:
    """Reads and writes :class:`SessionState` files."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths

    def path(self, name: str) -> Any:
        return self.paths.session_state_dir(name) / "state.json"

    def load(self, name: str) -> SessionState:
        p = self.path(name)
        try:
            raw = p.read_text(encoding="utf-8")
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
        fsutil.ensure_dir(p.parent, mode=0o700)
        data = json.dumps(st.to_json(), indent=2, sort_keys=True).encode() + b"\n"
        fsutil.atomic_write(p, data, mode=0o600)

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
