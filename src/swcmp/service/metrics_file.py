"""Writing the Prometheus textfile (see :mod:`swcmp.metrics`) after each pass."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509

from swcmp import fsutil
from swcmp.deploy import Charon, DeployError
from swcmp.errors import SwcmpError
from swcmp.ha import Role
from swcmp.metrics import CharonView
from swcmp.paths import Paths
from swcmp.policy import Plan
from swcmp.session import Session
from swcmp.state import SessionState

log = logging.getLogger(__name__)


def write(target: Path, paths: Paths, role: Role,
          seen: Sequence[tuple[Session, x509.Certificate | None, SessionState, Plan]],
          charon: Callable[[], CharonView | None], unreadable: Sequence[str] = ()) -> None:
    """Render the sessions ``seen`` in a pass and charon's view into ``target``, atomically."""
    from swcmp import metrics
    from swcmp.renewal import interrupted

    views = []
    for s, cert, st, p in seen:
        pending = interrupted(paths, s.name)
        state = ("polling" if pending == "waiting" else "in_progress") if pending else (
            "standby" if role.standby else p.state)
        views.append(metrics.SessionView(
            session=s, cert=cert, state=st, state_name=state,
            renew_at_ts=p.renew_at.timestamp() if p.renew_at else None,
            ca_certs=metrics.ca_certificates(s, paths)))
    text = metrics.render(views, role=role, charon=charon(), unreadable=unreadable)
    try:
        fsutil.ensure_dir(target.parent, mode=0o755)
        fsutil.atomic_write(target, text.encode(), mode=0o644)
    except SwcmpError as e:
        log.warning("cannot write metrics: %s", e)


def charon_view(charon: Charon | None) -> CharonView | None:
    """Which certificates charon holds keys for; None when swcmp does not talk to it."""
    if charon is None:
        return None
    try:
        with_key = charon.certs_with_key()
    except DeployError as e:
        log.debug("charon not asked for the metrics: %s", e)
        return CharonView(up=False)
    return CharonView(up=True, with_key=with_key)
