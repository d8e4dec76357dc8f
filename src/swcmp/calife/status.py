"""What ``status`` and ``session check`` say about a session's CA."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from swcmp.calife.state import (
    CaLifeStore,
    _current_cert,
    _iso,
    _read_certs,
    _time,
    fingerprint,
    revoked_record,
)
from swcmp.names import shown_dn
from swcmp.paths import Paths
from swcmp.session import Session
from swcmp.store import (
    root_cert_files,
)

log = logging.getLogger(__name__)



def status_info(session: Session, paths: Paths, now: datetime) -> dict[str, Any]:
    """The CA side of ``status`` and ``session check``: roots, rollover, CRL, revocations."""
    st = CaLifeStore(paths, session.name).load()
    roots = []
    seen: set[str] = set()
    trust_files = [*session.trust, *root_cert_files(paths, session.name)]
    for p in trust_files:
        for c in _read_certs([p]):
            fp = fingerprint(c)
            if c.subject != c.issuer or fp in seen:
                continue
            seen.add(fp)
            roots.append({"subject": c.subject.rfc4514_string(), "sha256": fp,
                          "not_after": _iso(c.not_valid_after_utc),
                          "expired": now > c.not_valid_after_utc, "file": str(p),
                          "trusted": p in session.trust})
    roll = st.rollover
    rollover = None
    if roll:
        done = roll.get("state") == "done"
        old_until = _time(roll.get("old_not_after"))
        rollover = {**roll, "state": "done" if done else (
            "old root expired" if old_until and now >= old_until else "both roots trusted")}
    revoked_current = next((r for r in st.revoked if r.get("current")), None)
    cur = _current_cert(paths, session.name)
    if revoked_current and cur is not None and \
            revoked_record([revoked_current], cur) is None:
        revoked_current = None
    return {"roots": roots, "rollover": rollover, "crl": st.crl,
            "unsupported": st.unsupported, "checked": st.checked,
            "pending_revocations": st.pending_revocations, "revoked": st.revoked,
            "current_revoked": revoked_current, "last_error": st.last_error,
            "failures": st.failures, "next_try": st.next_try}


def status_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    """``status`` text rows for :func:`status_info`'s dictionary."""
    rows: list[tuple[str, str]] = []
    for r in info.get("roots", []):
        rows.append(("root", f"{shown_dn(r['subject'])} sha256 {r['sha256'][:16]}... until "
                             f"{r['not_after']}" + (" (EXPIRED)" if r.get("expired") else "")))
    roll = info.get("rollover")
    if roll:
        rows.append(("root rollover", f"{roll['state']}: new {roll.get('new', '')[:16]}... "
                                      f"(taken {roll.get('taken')}), old "
                                      f"{roll.get('old', '')[:16]}... until "
                                      f"{roll.get('old_not_after')}"))
    crl = info.get("crl")
    if crl:
        rows.append(("CRL", f"{crl.get('entries')} revoked, issued {crl.get('this_update')}, "
                            f"next fetch {crl.get('refresh_at')}"))
    rc = info.get("current_revoked")
    if rc:
        rows.append(("REVOKED", f"the current certificate serial {rc['serial']} was revoked "
                                f"({rc['reason']}) at {rc['time']}: key updates with it are "
                                "refused; run `swcmp request initial`"))
    for p in info.get("pending_revocations", []):
        rows.append(("revocation due", f"serial {p.get('serial')} ({p.get('attempts', 0)} "
                                       f"attempts; {p.get('last_error', 'not tried yet')})"))
    for q, u in info.get("unsupported", {}).items():
        rows.append(("CA lacks", f"{q} (answered {u.get('since')}: {u.get('error')})"))
    for q, n in info.get("failures", {}).items():
        rows.append(("CA failing", f"{q}: {n} failure(s), next try "
                                   f"{info.get('next_try', {}).get(q, '-')}; last: "
                                   f"{info.get('last_error', {}).get(q, '')}"))
    return rows


def roots_check(session: Session, paths: Paths, now: datetime) -> Any:
    """``session check`` item ``ca-roots``: the trusted roots and the rollover state."""
    from swcmp.checks import CheckResult

    info = status_info(session, paths, now)
    roots = info["roots"]
    if not roots:
        return CheckResult("ca-roots", "ok", "no self-signed trust anchor (nothing to roll "
                           "over)")
    parts = [f"{shown_dn(r['subject'])} until {r['not_after'][:10]}"
             + (" EXPIRED" if r["expired"] else "") for r in roots]
    detail = "roots: " + "; ".join(parts)
    if info["rollover"]:
        detail += f"; rollover: {info['rollover']['state']}"
    if info["current_revoked"]:
        rc = info["current_revoked"]
        return CheckResult("ca-roots", "fail", detail + f"; the current certificate serial "
                           f"{rc['serial']} is revoked",
                           f"swcmp request initial {session.name}")
    if all(r["expired"] for r in roots):
        return CheckResult("ca-roots", "warn", detail, "ask the CA for its new root: "
                           f"swcmp request rootca {session.name}")
    return CheckResult("ca-roots", "ok", detail)


roots_check.check_name = "ca-roots"  # type: ignore[attr-defined]

