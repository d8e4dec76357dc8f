"""What ``swcmp status`` reports about a session, computed from its files and state.

Only light modules are imported at the top: ``swcmp status`` must not load the CMP
client or vici (tests/test_cli.py checks it).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swcmp.errors import SwcmpError

if TYPE_CHECKING:
    from swcmp.ha import Role
    from swcmp.paths import Paths
    from swcmp.session import Session


def cert_info(path: Path, now: datetime) -> dict[str, Any] | None:
    """The certificate at ``path`` as ``status`` shows it; None when there is none."""
    from swcmp.cmp import certs
    from swcmp.names import format_dn

    try:
        cert = certs.load_certificate(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as e:
        return {"path": str(path), "error": f"cannot read {path}: {e.strerror}"}
    except SwcmpError as e:
        return {"path": str(path), "error": f"{path}: {Exception.__str__(e)}"}
    not_after = cert.not_valid_after_utc
    return {
        "path": str(path),
        "subject": format_dn(cert.subject),
        "issuer": format_dn(cert.issuer),
        "serial": f"{cert.serial_number:x}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": not_after.isoformat(),
        "days_left": max((not_after - now).days, 0),
        "expired": now >= not_after,
    }


def poll_limit_end(paths: Paths, s: Session) -> datetime | None:
    """When the session's journaled CA transaction reaches its poll_limit (None: no
    transaction the CA keeps waiting, or its start unknown)."""
    from swcmp.errors import StorageError
    from swcmp.store import Journal

    try:
        entry = Journal(paths, s.name).load()
    except StorageError:
        return None
    if entry is None or entry.tx_started is None or not entry.held_by_ca():
        return None
    try:
        return datetime.fromisoformat(entry.tx_started) + timedelta(seconds=s.poll_limit)
    except OverflowError:  # a start no run wrote (year 9999): no end to show
        return None


def session_status(paths: Paths, s: Session, now: datetime, role: Role | None
                   ) -> dict[str, Any]:
    """What ``swcmp status`` says about one session (the JSON form; the CLI renders it):
    its state and why, its certificate, the next renewal, the last result."""
    from swcmp import fsutil
    from swcmp.calife import status_info
    from swcmp.cmp import certs
    from swcmp.policy import plan
    from swcmp.renewal import damaged_journal, interrupted
    from swcmp.state import StateStore

    st = StateStore(paths).load(s.name)
    cert_path = paths.cert_file(s.name)
    info = cert_info(cert_path, now)
    cert = None
    if info is not None and "error" not in info:
        cert = certs.load_certificate(cert_path.read_bytes())
    p = plan(s, cert, st, now)
    pending = interrupted(paths, s.name)
    holder = fsutil.lock_holder(paths.lock_dir, s.name)
    if holder is not None:
        # Another process holds the session's lock: a renewal or request running now,
        # not an interrupted one.
        state = "polling" if pending == "waiting" else "in_progress"
        by = f"pid {holder}" if holder else "another swcmp process"
        reason = f"a renewal or request is running now ({by})" + (
            f", phase {pending}" if pending else "")
    elif pending == "unreadable":
        state = "failed"
        reason = (f"its renewal journal is damaged, no renewal can run: "
                  f"{damaged_journal(paths, s.name)}")
    elif pending is not None:
        state = "polling" if pending == "waiting" else "in_progress"
        # Name the command: with auto-update off no pass of serve or `renew` ever comes.
        cmd = f"`swcmp request keyupdate {s.name}`"
        reason = (f"an interrupted renewal (phase {pending}) is finished by the next "
                  f"renewal pass or now by {cmd}" if s.auto_update else
                  f"an interrupted renewal (phase {pending}) waits for {cmd} to finish "
                  "it (auto-update is off)")
        ends = poll_limit_end(paths, s)
        if ends is not None:
            reason += (f", or is abandoned if the CA still keeps it waiting at "
                       f"{ends:%Y-%m-%d %H:%M:%S}Z (poll_limit)")
    elif role is not None and role.standby:
        state, reason = "standby", role.standby_reason()
    else:
        state, reason = p.state, p.reason
    ca = status_info(s, paths, now)
    revoked = ca.get("current_revoked") if isinstance(ca, dict) else None
    if revoked and pending is None and holder is None:
        # A revoked certificate is no certificate to rank ok: the CA refuses its key
        # update and peers that check revocation refuse it.
        state = "revoked"
        reason = (f"the current certificate (serial {revoked.get('serial')}) was revoked; "
                  f"enroll again with `swcmp request initial {s.name}`")
    last = st.last_result

    def result(r: Any) -> dict[str, Any] | None:
        if r is None:
            return None
        return {"time": r.time, "action": r.action, "ok": r.ok, "message": r.message,
                "serial": r.serial}

    return {
        "session": s.name,
        "auto_update": s.auto_update,
        "state": state,
        "reason": reason,
        "certificate": info,
        "next_renewal": p.renew_at.isoformat() if p.renew_at else None,
        "next_attempt": st.next_attempt,
        "failures": st.failures,
        "journal_damaged": pending == "unreadable",
        "last_result": (
            {
                "time": last.time,
                "action": last.action,
                "ok": last.ok,
                "message": last.message,
                "serial": last.serial,
            }
            if last is not None
            else None
        ),
        "other_results": {kind: result(st.other_results.get(kind))
                          for kind in ("ca", "manual")},
        "charon": st.charon,
        "ca": ca,
    }
