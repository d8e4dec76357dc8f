"""Old keys a pinned-mode renewal leaves loaded, and their removal once unneeded.

IKE SAs established before a pinned connection was replaced keep the old
connection config and so the old certificate: when they re-authenticate they sign
with the old key. The records kept here say which IKE SAs still need which key;
``swcmp serve`` unloads a key once none of them is left.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from swcmp.strongswan.vici import (
    DEFAULT_TIMEOUT,
    CommandFailed,
    ConnectionLost,
    KeyId,
    SocketFactory,
    Vici,
    open_session,
    query_error,
    text,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StaleKey:
    """An old private key a pinned-mode renewal left loaded on purpose.

    IKE SAs established before the connection was replaced keep the old
    connection config, and so the old pinned certificate: when they
    re-authenticate they sign with the old key. Unload it with
    :func:`unload_stale_keys` once none of them is left.

    Attributes:
        key_id: charon's id of the old key.
        session: the swcmp session it belonged to.
        connections: the connections that were replaced.
        ike_sas: unique ids of the IKE SAs of those connections that were up when
            they were replaced (they hold the old config).
        replaced_at: when (seconds since the epoch).
    """

    key_id: KeyId
    session: str
    connections: tuple[str, ...]
    ike_sas: frozenset[int]
    replaced_at: float

    def with_successor(self, old_uniqueid: int, new_uniqueid: int) -> StaleKey:
        """Follow an IKE SA rekey or reauthentication (``ike-rekey`` event).

        A rekeyed or re-authenticated IKE SA inherits the old connection config,
        so its new unique id must be tracked too. Returns self when
        ``old_uniqueid`` is not tracked.
        """
        if old_uniqueid not in self.ike_sas:
            return self
        return StaleKey(self.key_id, self.session, self.connections,
                        self.ike_sas | {new_uniqueid}, self.replaced_at)


@dataclass(frozen=True)
class StaleCleanup:
    """What :func:`unload_stale_keys` did.

    Attributes:
        unloaded: key ids removed from charon (or already gone).
        kept: the stale keys still needed, each with the reason.
    """

    unloaded: tuple[KeyId, ...]
    kept: tuple[tuple[StaleKey, str], ...]


def ike_sas(
    conn: Vici, names: Iterable[str], *, without_child_sa: bool = False
) -> dict[int, str]:
    """Unique id -> connection name of the IKE SAs of the given connections (only those
    with no CHILD_SA when ``without_child_sa``)."""
    wanted = set(names)
    found: dict[int, str] = {}
    for item in conn.stream("list-sas", "list-sa"):
        for name, sa in item.items():
            if name not in wanted or not isinstance(sa, dict):
                continue
            if without_child_sa and sa.get("child-sas"):
                continue
            try:
                found[int(text(sa.get("uniqueid", b"0")))] = name
            except ValueError:
                continue
    return found


def unload_stale_keys(
    uri: str,
    stale: Iterable[StaleKey],
    *,
    keep: Iterable[KeyId] = (),
    timeout: float = DEFAULT_TIMEOUT,
    connect: SocketFactory | None = None,
) -> StaleCleanup:
    """Unload old keys that no IKE SA with the old pinned config can need any more.

    A stale key is unloaded when none of the IKE SAs recorded in it (see
    :meth:`StaleKey.with_successor` for rekeys) is still up, and it is not in
    ``keep`` (pass the key ids of every session's current pair, so a key that is
    in use again, e.g. re-certified, is never removed).

    Args:
        uri: charon's VICI URI.
        stale: the records :attr:`PinnedDeployer.stale_keys` collected.
        keep: key ids that must stay loaded whatever happens.
        timeout: seconds to wait for charon.

    Returns:
        Which keys were unloaded and which are still needed (and why).

    Raises:
        DeployUnavailable: charon cannot be reached.
        DeployError: charon refused a command.
    """
    keep_ids = {KeyId(k.lower()) for k in keep}
    records = tuple(stale)
    unloaded: list[KeyId] = []
    kept: list[tuple[StaleKey, str]] = []
    with open_session(uri, timeout, connect) as conn:
        try:
            up = ike_sas(conn, {c for s in records for c in s.connections})
            loaded = set(conn.get_keys())
            for record in records:
                old = sorted(uid for uid in record.ike_sas if uid in up)
                if record.key_id in keep_ids:
                    kept.append((record, "the key is in use by a current pair"))
                elif old:
                    kept.append((record, "IKE SA(s) " + ", ".join(f"#{u}" for u in old)
                                 + " made with the old certificate are still up"))
                else:
                    if record.key_id in loaded:
                        conn.unload_key(record.key_id)
                        loaded.discard(record.key_id)
                        log.info("unloaded stale key %s of session %s", record.key_id,
                                 record.session)
                    unloaded.append(record.key_id)
        except (CommandFailed, ConnectionLost) as e:
            raise query_error(uri, e) from None
    return StaleCleanup(tuple(unloaded), tuple(kept))


def load_stale_keys(path: Path) -> list[StaleKey]:
    """The stale-key records saved in ``path`` (none when it is missing or damaged)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [StaleKey(KeyId(str(r["key_id"])), str(r["session"]),
                         tuple(str(c) for c in r["connections"]),
                         frozenset(int(u) for u in r["ike_sas"]), float(r["replaced_at"]))
                for r in data]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("stale-key records %s unreadable (%s); ignored", path, e)
        return []


def save_stale_keys(path: Path, records: Iterable[StaleKey]) -> None:
    """Write the records (atomically); remove the file when there are none."""
    from swcmp import fsutil

    data = [{"key_id": r.key_id, "session": r.session, "connections": list(r.connections),
             "ike_sas": sorted(r.ike_sas), "replaced_at": r.replaced_at} for r in records]
    if not data:
        fsutil.remove_file(path, missing_ok=True)
        return
    fsutil.ensure_dir(path.parent, mode=0o700)
    fsutil.atomic_write(path, json.dumps(data, indent=1).encode(), mode=0o600)


def unload_stale_from_file(uri: str, path: Path, *, keep: Iterable[KeyId] = (),
                           timeout: float = DEFAULT_TIMEOUT,
                           connect: SocketFactory | None = None) -> StaleCleanup:
    """:func:`unload_stale_keys` for the records in ``path``; keeps only those still needed.

    ``swcmp serve`` runs this on every pass, so an old pinned-mode key leaves
    charon once the IKE SAs made with the old certificate are gone.
    """
    records = load_stale_keys(path)
    if not records:
        return StaleCleanup((), ())
    result = unload_stale_keys(uri, records, keep=keep, timeout=timeout, connect=connect)
    save_stale_keys(path, [record for record, _ in result.kept])
    return result
