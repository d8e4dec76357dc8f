"""Writing the Prometheus textfile (see :mod:`swcmp.metrics`) after each pass."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from swcmp import fsutil
from swcmp.deploy import Charon, DeployError
from swcmp.errors import SwcmpError
from swcmp.ha import Role
from swcmp.paths import Paths
from swcmp.policy import Plan
from swcmp.session import Session
from swcmp.state import SessionState

if TYPE_CHECKING:
    from swcmp.metrics import CharonView

log = logging.getLogger(__name__)


def write(target: Path, paths: Paths, role: Role,
          seen: Sequence[tuple[Session, x509.Certificate | None, SessionState, Plan]],
          charon: Callable[[], CharonView | None], unreadable: Sequence[str] = (),
          now: datetime | None = None) -> None:
    """Render the sessions ``seen`` in a pass and charon's view into ``target``, atomically
    (``now``: the time of writing, which the file says)."""
    from swcmp import metrics
    from swcmp.renewal import interrupted

    views = []
    for s, cert, st, p in seen:
        pending = interrupted(paths, s.name)
        state = ("polling" if pending == "waiting" else "in_progress") if pending else (
            "standby" if role.standby else p.state)
        if pending == "unreadable":
            state = "failed"  # a damaged journal: no renewal can run
        views.append(metrics.SessionView(
            session=s, cert=cert, state=st, state_name=state,
            renew_at_ts=p.renew_at.timestamp() if p.renew_at else None,
            ca_certs=metrics.ca_certificates(s, paths),
            ca_life_failures=ca_life_failures(paths, s.name),
            journal_damaged=pending == "unreadable"))
    text = metrics.render(views, role=role, charon=charon(), unreadable=unreadable,
                          written=now)
    try:
        fsutil.ensure_dir(target.parent, mode=0o755)
        fsutil.atomic_write(target, text.encode(), mode=0o644)
    except SwcmpError as e:
        log.warning("cannot write metrics: %s", e)


def ca_life_failures(paths: Paths, name: str) -> dict[str, tuple[int, float | None]]:
    """Per CA-life question that failed: the failures in a row and the next try (Unix
    time), from the session's ``calife.json`` (a damaged file reads as no failures)."""
    from swcmp.calife import CaLifeStore
    from swcmp.calife.state import _time

    st = CaLifeStore(paths, name).load()
    out: dict[str, tuple[int, float | None]] = {}
    for question, n in st.failures.items():
        if n <= 0:
            continue
        when = _time(st.next_try.get(question))
        out[question] = (n, when.timestamp() if when is not None else None)
    return out


def charon_view(charon: Charon | None) -> CharonView | None:
    """Which certificates charon holds keys for; None when swcmp does not talk to it."""
    if charon is None:
        return None
    from swcmp.metrics import CharonView

    try:
        with_key = charon.certs_with_key()
    except DeployError as e:
        log.debug("charon not asked for the metrics: %s", e)
        return CharonView(up=False)
    return CharonView(up=True, with_key=with_key)
