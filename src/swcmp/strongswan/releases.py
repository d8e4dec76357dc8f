"""What a charon release does to established IKE SAs when ``load-conn`` replaces a connection.

Pinned mode re-sends each connection that names the renewed certificate. The
certificate is part of the connection's local authentication config, and charon
compares configs with the certificates in them, so the new message always
*replaces* the connection (log: ``replaced vici connection``). What charon then
does to the IKE SAs of the replaced config depends on the release (read in
strongSwan's ``src/libcharon/plugins/vici/vici_config.c``, ``merge_config``):

- up to 5.9: IKE SAs are only looked at for children with ``start_action =
  start`` (their CHILD_SAs are closed and initiated again; an IKE SA left with
  no other CHILD_SA is closed). Every other IKE SA keeps the old config.
- since 6.0.0 (``terminate_for_action``, from the change "vici: Improve handling
  of start action when reloading configs"): every IKE SA of the connection is
  looked at, whatever the children's start actions, each time the connection is
  loaded again: replaced, and also re-sent unchanged (log: ``updated vici
  connection``; ``replace_children`` runs the same check unless an added child
  is to be started), or unloaded. One that has no CHILD_SA besides those of
  ``start_action = start`` children (and no CHILD_SA being created for another
  child) is closed, even while it is still connecting (log: ``vici closing
  IKE_SA``). IKE SAs that carry a CHILD_SA of another child stay up with the old
  config, as before.

There is no option or ``load-conn`` field that keeps them, and no way to make
charon use a renewed pinned certificate without loading the connection again;
identity mode (``local.id`` without ``local.certs``) never re-sends the
connection and so keeps every IKE SA on every release (``swanctl --load-conns``
run by hand closes them on 6.0 all the same).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from swcmp.cmp.text import safe
from swcmp.strongswan.stale_keys import ike_sas
from swcmp.strongswan.vici import CommandFailed, Vici, text

CLOSES_CHILDLESS_SINCE = (6, 0)
"""The first charon release that closes the IKE SAs without CHILD_SA of a replaced connection."""

#: A few ASCII digits, not inside a longer number: charon's answer is not trusted (int()
#: refuses more than 4 300 digits, and other scripts' digits name no release).
_RELEASE = re.compile(r"(?<![0-9.])([0-9]{1,4})\.([0-9]{1,4})(?![0-9])")
#: The longest version shown in a warning (charon's answer is not trusted).
_SHOWN_VERSION = 40


def release_of(version: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a version string as VICI ``version`` reports it (``6.0.1``);
    None when it names none."""
    match = _RELEASE.search(version)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def closes_childless(version: str) -> bool:
    """Whether this charon release closes a replaced connection's IKE SAs without CHILD_SA."""
    release = release_of(version)
    return release is not None and release >= CLOSES_CHILDLESS_SINCE


def charon_version(conn: Vici) -> str:
    """charon's version (VICI ``version``), or ``""`` when it does not say."""
    try:
        answer = conn.call("version")
    except CommandFailed:
        return ""
    return text(answer.get("version", b""))


def childless_ike_sas(conn: Vici, names: Iterable[str]) -> dict[int, str]:
    """Unique id -> connection name of the IKE SAs of ``names`` that have no CHILD_SA."""
    return ike_sas(conn, names, without_child_sa=True)


def replace_warning(version: str, connections: Iterable[str]) -> str:
    """What re-sending pinned ``connections`` does on this charon release, for operators."""
    names = safe(", ".join(connections))
    if len(version) > _SHOWN_VERSION:
        version = version[:_SHOWN_VERSION] + "..."
    return (f"charon {safe(version)} (strongSwan 6.0 or later) closes the IKE SAs of a "
            "connection it replaces that have no CHILD_SA (other than those of start_action = "
            f"start children); a renewal in pinned mode replaces {names}, so such IKE SAs are "
            "closed (IKE SAs carrying other CHILD_SAs stay up); identity mode keeps them all")
