"""Make a renewed key and certificate live in charon, or leave the previous pair live.

Two modes share one swap and one failure path (:class:`_SwapDeployer`):

- *identity mode* (:class:`ViciDeployer`): connections select the local
  certificate by ``local.id``, so a renewal only changes charon's credential
  sets. charon picks the first certificate matching the identity that has a
  private key and a trust chain, and it keeps loaded certificates newest first
  (see STRONGSWAN.md).
- *pinned mode* (:class:`PinnedDeployer`): a connection names the certificate
  file in ``local.certs`` and holds the certificate itself, so each affected
  connection is re-sent with ``load-conn`` as ``swanctl --load-conns`` builds it.

The shared swap: ``load-key`` (new, checked against the certificate), ``load-cert``
(new and CA certificates), ``list-certs`` must show the new certificate with its
private key; then the mode's switch; then ``flush-certs``. When charon refuses a
step, the mode restores the previous pair; when the connection breaks, it does so
on a fresh connection. Established IKE SAs are never touched. VICI has no
``unload-cert``: an old certificate stays loaded, but without its key charon cannot
use it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from swcmp.deploy import CredentialPair, DeployError, DeployResult, DeployUnavailable
from swcmp.errors import ConfigError
from swcmp.strongswan.load_conn import build_load_conn, connections_using_cert
from swcmp.strongswan.releases import (
    charon_version,
    childless_ike_sas,
    closes_childless,
    replace_warning,
)
from swcmp.strongswan.stale_keys import StaleKey, ike_sas, load_stale_keys, save_stale_keys
from swcmp.strongswan.swanctl_conf import ConfSection, parse_file
from swcmp.strongswan.vici import (
    DEFAULT_TIMEOUT,
    DEFAULT_VICI_URI,
    UNAVAILABLE_HINT,
    CheckFailed,
    CommandFailed,
    ConnectionLost,
    KeyId,
    SocketFactory,
    Vici,
    cert_der,
    key_id_from_cert_pem,
    open_session,
    parse_cert,
    query_error,
    vici_socket_path,
)

log = logging.getLogger(__name__)

DEFAULT_SWANCTL_CONF = "/etc/swanctl/swanctl.conf"
"""swanctl's configuration; its directory is the swanctl directory (``x509/``, ``private/``)."""


def load_pair(conn: Vici, pair: CredentialPair, expected: KeyId, *,
              keys_before: tuple[KeyId, ...] | None = None,
              cert_loaded: Callable[[], None] | None = None) -> tuple[KeyId, ...]:
    """Load ``pair``'s key, certificate and CA certificates; the key ids loaded before.

    ``keys_before``: charon's keys, when the caller already asked (so that it knows
    them even if a later step fails); ``cert_loaded`` is called as soon as the
    end-entity certificate is in charon (VICI cannot take it out again). Raises
    CheckFailed (after unloading the stray key again, unless it was loaded before)
    when the key is not the certificate's.
    """
    if keys_before is None:
        keys_before = conn.get_keys()
    got = conn.load_pair_key(pair)
    if got != expected:
        if got not in keys_before:
            conn.unload_key(got)
        raise CheckFailed("load-key", f"the key {pair.key.describe()} does not match "
                                      f"{pair.cert_path}")
    conn.load_cert(pair.cert_pem, ca=False)
    if cert_loaded is not None:
        cert_loaded()
    for ca_pem in pair.ca_certs_pem:
        conn.load_cert(ca_pem, ca=True)
    return keys_before


def _load_again(conn: Vici, pair: CredentialPair) -> KeyId:
    """Re-load a pair that was live before, unchecked (restoring must not stop half-way)."""
    key_id = conn.load_pair_key(pair)
    conn.load_cert(pair.cert_pem, ca=False)
    for ca_pem in pair.ca_certs_pem:
        conn.load_cert(ca_pem, ca=True)
    return key_id


@dataclass
class _Swap:
    """One deployment in progress: what is swapped and what charon accepted so far."""

    new: CredentialPair
    previous: CredentialPair | None
    new_id: KeyId
    new_der: bytes
    serial: int
    old_id: KeyId | None
    keys_before: tuple[KeyId, ...] | None = None
    keys_after: tuple[KeyId, ...] = ()
    progress: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, new: CredentialPair, previous: CredentialPair | None) -> _Swap:
        try:
            return cls(new, previous, key_id_from_cert_pem(new.cert_pem), cert_der(new.cert_pem),
                       parse_cert(new.cert_pem).serial_number,
                       key_id_from_cert_pem(previous.cert_pem) if previous is not None else None)
        except ValueError as e:
            raise DeployError(
                f"session {new.session}: a certificate to deploy does not parse ({e}); "
                "charon was not changed"
            ) from None


class _SwapDeployer:
    """The swap and failure handling both modes share; subclasses switch and restore."""

    mode = ""

    def __init__(self, uri: str, timeout: float, connect: SocketFactory | None) -> None:
        vici_socket_path(uri)  # validate early
        self.uri = uri
        self.timeout = timeout
        self.connect = connect

    def deploy(self, new: CredentialPair, previous: CredentialPair | None) -> DeployResult:
        """Activate ``new`` in charon; on failure restore ``previous``.

        Args:
            new: the committed, verified pair to make live.
            previous: the pair charon used so far, or None on a first enrolment.

        Returns:
            What was done.

        Raises:
            DeployUnavailable: charon is not reachable; nothing was changed in it.
            DeployError: charon refused a step; ``previous`` is live again (as far as
                the message says).
        """
        swap = _Swap.of(new, previous)
        self._prepare(swap)
        try:
            with open_session(self.uri, self.timeout, self.connect) as conn:
                try:
                    # Known before anything changes, so that a restore after any
                    # later step knows which keys were there already.
                    swap.keys_before = conn.get_keys()
                    load_pair(conn, new, swap.new_id, keys_before=swap.keys_before,
                              cert_loaded=lambda: swap.progress.append("load-cert new"))
                    if not any(der == swap.new_der and cert.has_privkey
                               for der, cert in conn.list_certs()):
                        raise CheckFailed(
                            "list-certs", "the new certificate is not listed with its private key")
                    self._switch(conn, swap)
                    conn.flush_certs()
                except CommandFailed as e:
                    restored = self._restore(conn, swap, reconnected=False)
                    what = (f"check after {e.command} failed: {e.errmsg}"
                            if isinstance(e, CheckFailed)
                            else f"charon refused {e.command}: {e.errmsg}")
                    raise self._failure(new, what, restored) from None
        except ConnectionLost as e:
            # charon went away mid-way: restore on a fresh connection.
            try:
                with open_session(self.uri, self.timeout, self.connect) as conn:
                    restored = self._restore(conn, swap, reconnected=True)
            except DeployUnavailable:
                err = DeployUnavailable(
                    f"session {new.session}: charon at {self.uri} stopped answering during "
                    f"{e.command}" + self._lost_detail(swap))
                err.hint = UNAVAILABLE_HINT
                raise err from None
            except ConnectionLost:
                restored = "charon stopped answering again while restoring the previous pair"
            raise self._failure(new, str(e), restored) from None
        detail = self._done(swap)
        log.info("session %s deployed to charon%s: %s", new.session, self.mode, detail)
        return DeployResult(deployed=True, detail=detail)

    # -- what the modes do

    def _prepare(self, swap: _Swap) -> None:
        """Work out the mode's plan before charon is touched (DeployError to stop)."""

    def _switch(self, conn: Vici, swap: _Swap) -> None:
        raise NotImplementedError

    def _restore(self, conn: Vici, swap: _Swap, *, reconnected: bool) -> str:
        raise NotImplementedError

    def _done(self, swap: _Swap) -> str:
        return f"charon uses certificate serial {swap.serial:#x} with key id {swap.new_id}"

    def _lost_detail(self, swap: _Swap) -> str:
        return ""

    def _failure(self, new: CredentialPair, what: str, restored: str) -> DeployError:
        mode = f" ({self.mode.strip(' ()')} mode)" if self.mode else ""
        err = DeployError(f"session {new.session}: deploying to charon at {self.uri} failed"
                          f"{mode}: {what}; {restored}")
        err.hint = "fix the cause and renew again; the previous certificate stays in use"
        return err


class ViciDeployer(_SwapDeployer):
    """Make a renewed pair live in charon over VICI (identity mode).

    Args:
        uri: charon's VICI URI, ``unix:///path``.
        timeout: seconds to wait for charon to accept or answer.
        connect: a factory of connected sockets to use instead of ``uri`` (tests).

    Raises:
        ConfigError: ``uri`` is not a usable VICI URI.
    """

    def __init__(self, uri: str = DEFAULT_VICI_URI, *, timeout: float = DEFAULT_TIMEOUT,
                 connect: SocketFactory | None = None) -> None:
        super().__init__(uri, timeout, connect)

    def __repr__(self) -> str:
        return f"ViciDeployer(uri={self.uri!r})"

    def _switch(self, conn: Vici, swap: _Swap) -> None:
        old_id = swap.old_id
        if old_id is not None and old_id != swap.new_id:
            if old_id in conn.get_keys():
                conn.unload_key(old_id)
                swap.progress.append("unload-key old")
            else:
                swap.progress.append("old key not loaded over VICI")

    def _restore(self, conn: Vici, swap: _Swap, *, reconnected: bool) -> str:
        """Make the previous pair charon's choice again; a sentence saying what was done."""
        previous = swap.previous
        try:
            old_id: KeyId | None = None
            if previous is not None:
                # Re-load the old pair first, so a usable pair exists at every moment.
                old_id = _load_again(conn, previous)
            if swap.new_id != old_id and swap.new_id in conn.get_keys():
                # Without its key the new certificate can no longer be chosen.
                conn.unload_key(swap.new_id)
            conn.flush_certs()
        except CommandFailed as e:
            log.error("restoring the previous pair failed: %s refused: %s", e.command, e.errmsg)
            return (
                f"restoring the previous pair failed too ({e.command}: {e.errmsg}); "
                "which pair charon uses is uncertain: check `swanctl --list-certs` and "
                "restart charon once the files in storage are the pair to use"
            )
        if previous is None:
            return "there was no previous pair; charon holds no key of this session"
        if swap.new_id == old_id and "load-cert new" in swap.progress:
            return (
                "the previous pair is loaded again; the new certificate (same key) stays "
                "loaded because VICI cannot unload certificates"
            )
        return "the previous pair is live again"

    def _done(self, swap: _Swap) -> str:
        detail = super()._done(swap)
        if "unload-key old" in swap.progress:
            detail += f"; old key {swap.old_id} unloaded"
        if "old key not loaded over VICI" in swap.progress:
            detail += (f"; old key {swap.old_id} was not loaded over VICI (if charon holds it "
                       "from another source such as ipsec.secrets, remove it there)")
        return detail


def _start_children(conf: ConfSection, connection: str) -> list[str]:
    """Children of ``connection`` whose ``start_action`` includes ``start``."""
    children = conf.section(f"connections.{connection}.children")
    if children is None:
        return []
    found = []
    for name, child in children.sections.items():
        action = (child.get("start_action") or "").lower()
        if "start" in action.replace("|", " ").split():
            found.append(name)
    return found


@dataclass
class _PinnedPlan:
    names: list[str]
    messages: dict[str, dict[str, object]]
    restore: dict[str, dict[str, object]] | None
    notes: list[str]
    replaced: list[str] = field(default_factory=list)
    old_sas: set[int] = field(default_factory=set)
    #: IKE SAs charon closes when it replaces the connections (strongSwan 6.0 and later)
    closing: dict[int, str] = field(default_factory=dict)


class PinnedDeployer(_SwapDeployer):
    """Make a renewed pair live in charon when connections pin it (``local.certs = file``).

    Besides loading the new key and certificate (as in identity mode) each
    affected connection is re-sent with ``load-conn``, built from swanctl.conf
    exactly as ``swanctl --load-conns`` builds it (the renewal engine has already
    rewritten the certificate file in place). charon replaces a connection whose
    certificate changed; children with ``start_action = start`` are closed and
    initiated again (a warning is logged), ``trap`` policies are reinstalled.
    charon 6.0 and later also close every IKE SA of a replaced connection that has
    no CHILD_SA (see :mod:`~swcmp.strongswan.releases`): their number is logged as
    a warning and reported; no message keeps them. Other IKE SAs already
    established keep the old connection config and, when they
    re-authenticate, the old certificate: the old key therefore stays loaded and is
    recorded in :attr:`stale_keys` (and ``stale_file``) for
    :func:`~swcmp.strongswan.stale_keys.unload_stale_keys`.

    If charon refuses a step, the connections already replaced are re-sent with
    the previous certificate and the new key is unloaded.

    Args:
        uri: charon's VICI URI.
        swanctl_conf: swanctl.conf to build the connections from.
        swanctl_dir: swanctl's directory (default: the directory of
            ``swanctl_conf``, as ``swanctl --file`` does).
        connections: the connections to re-send (the session's connection
            list); empty: every connection whose ``local*.certs`` names the
            certificate file.
        timeout: seconds to wait for charon.
        stale_file: where old keys left loaded are recorded.
        connect: a factory of connected sockets to use instead of ``uri`` (tests).

    Raises:
        ConfigError: ``uri`` is not a usable VICI URI.
    """

    mode = " (pinned)"

    def __init__(
        self,
        uri: str = DEFAULT_VICI_URI,
        *,
        swanctl_conf: Path | str = DEFAULT_SWANCTL_CONF,
        swanctl_dir: Path | str | None = None,
        connections: Iterable[str] = (),
        timeout: float = DEFAULT_TIMEOUT,
        stale_file: Path | None = None,
        connect: SocketFactory | None = None,
    ) -> None:
        super().__init__(uri, timeout, connect)
        self.stale_file = stale_file
        self.swanctl_conf = Path(swanctl_conf)
        self.swanctl_dir = Path(swanctl_dir) if swanctl_dir is not None else (
            self.swanctl_conf.parent)
        self.connections = tuple(connections)
        self.stale_keys: list[StaleKey] = []
        self._plan: _PinnedPlan | None = None

    def __repr__(self) -> str:
        return f"PinnedDeployer(uri={self.uri!r}, swanctl_conf={str(self.swanctl_conf)!r})"

    def _prepare(self, swap: _Swap) -> None:
        """Connections, their new and previous load-conn messages, and warnings."""
        new, previous = swap.new, swap.previous
        try:
            conf = parse_file(self.swanctl_conf)
        except ConfigError as e:
            raise DeployError(f"session {new.session}: {e}; charon was not changed") from None
        names = list(self.connections) or list(
            connections_using_cert(conf, self.swanctl_dir, new.cert_path))
        if not names:
            raise DeployError(
                f"session {new.session}: no connection in {self.swanctl_conf} pins "
                f"{new.cert_path} (local.certs); charon was not changed"
            ).with_hint("name the connections with --connection, or use identity mode "
                        "(local.id without local.certs)")
        pinned = set(connections_using_cert(conf, self.swanctl_dir, new.cert_path))
        notes: list[str] = []
        for name in names:
            if name not in pinned:
                notes.append(f"connection {name} does not name {new.cert_path} in local.certs")
            for child in _start_children(conf, name):
                notes.append(f"child {name}/{child} has start_action = start: charon closes "
                             "and re-initiates it when the connection is replaced")
        try:
            on_disk = new.cert_path.read_bytes()
        except OSError as e:
            raise DeployError(f"session {new.session}: cannot read {new.cert_path}: "
                              f"{e.strerror or e}; charon was not changed") from None
        if on_disk != new.cert_pem:
            raise DeployError(
                f"session {new.session}: {new.cert_path} does not hold the certificate to "
                "deploy; charon was not changed"
            ).with_hint("the renewal engine commits the file before deploying: run the "
                        "renewal again")
        try:
            messages = {n: build_load_conn(conf, n, self.swanctl_dir) for n in names}
            restore = None
            if previous is not None:
                override: dict[Path | str, bytes] = {new.cert_path: previous.cert_pem}
                if previous.cert_path != new.cert_path:
                    override[previous.cert_path] = previous.cert_pem
                restore = {n: build_load_conn(conf, n, self.swanctl_dir, overrides=override)
                           for n in names}
        except ConfigError as e:
            raise DeployError(f"session {new.session}: {e}; charon was not changed") from None
        for note in notes:
            log.warning("session %s: %s", new.session, note)
        self._plan = _PinnedPlan(names, messages, restore, notes)

    def _current_plan(self) -> _PinnedPlan:
        assert self._plan is not None, "_prepare runs first"
        return self._plan

    def _switch(self, conn: Vici, swap: _Swap) -> None:
        plan = self._current_plan()
        plan.old_sas = set(ike_sas(conn, plan.names))
        version = charon_version(conn)
        if closes_childless(version):
            plan.closing = childless_ike_sas(conn, plan.names)
            if plan.closing:
                note = (f"{replace_warning(version, plan.names)}: closing "
                        f"{len(plan.closing)} IKE SA(s) without CHILD_SA")
                log.warning("session %s: %s", swap.new.session, note)
                plan.notes.append(note)
        for name in plan.names:
            plan.replaced.append(name)  # restore it too if charon fails half-way through
            try:
                conn.call("load-conn", plan.messages[name])
            except CommandFailed as e:
                plan.replaced.remove(name)  # a refused load-conn leaves the old config
                raise CommandFailed(f"load-conn {name}", e.errmsg) from None
        swap.keys_after = conn.get_keys()

    def _restore(self, conn: Vici, swap: _Swap, *, reconnected: bool) -> str:
        plan = self._current_plan()
        previous, replaced = swap.previous, plan.replaced
        problems: list[str] = []
        if reconnected and previous is not None and plan.restore is not None:
            # The connection was lost: charon may have been restarted meanwhile. A new
            # charon has no previous key (the start hook loads the files, which hold the
            # new pair until the renewal engine restores them) and took its connections
            # from swanctl.conf, i.e. pinned to the new certificate file. So load the
            # previous pair again and re-send every connection, not only those replaced.
            try:
                _load_again(conn, previous)
            except CommandFailed as e:
                problems.append(f"loading the previous pair again failed ({e.command}: "
                                f"{e.errmsg})")
            replaced[:] = list(plan.restore)
        if replaced:
            if plan.restore is None:
                problems.append(f"connection(s) {', '.join(replaced)} keep the new certificate "
                                "(there is no previous one)")
            else:
                for name in replaced:
                    try:
                        conn.call("load-conn", plan.restore[name])
                    except CommandFailed as e:
                        problems.append(f"re-sending {name} with the previous certificate "
                                        f"failed: {e.errmsg}")
        try:
            # A pinned connection names its certificate, so a key loaded before the
            # swap (another session's, or the same key re-certified) may stay.
            if (swap.new_id != swap.old_id and swap.new_id in conn.get_keys()
                    and (swap.keys_before is None or swap.new_id not in swap.keys_before)):
                conn.unload_key(swap.new_id)
            conn.flush_certs()
        except CommandFailed as e:
            problems.append(f"{e.command} failed: {e.errmsg}")
        if problems:
            log.error("restoring the previous state failed: %s", "; ".join(problems))
            return ("restoring the previous state failed in part (" + "; ".join(problems)
                    + "): check `swanctl --list-conns` and `swanctl --list-certs`")
        if replaced:
            return (f"connection(s) {', '.join(replaced)} use the previous certificate again "
                    "and the new key is unloaded")
        return "no connection was changed and the new key is unloaded"

    def _lost_detail(self, swap: _Swap) -> str:
        replaced = self._current_plan().replaced
        return f" after replacing {', '.join(replaced)}" if replaced else ""

    def _done(self, swap: _Swap) -> str:
        plan = self._current_plan()
        detail = super()._done(swap) + f"; re-sent connection(s) {', '.join(plan.names)}"
        old_id = swap.old_id
        if old_id is not None and old_id != swap.new_id and old_id in swap.keys_after:
            kept = plan.old_sas - set(plan.closing)
            record = StaleKey(old_id, swap.new.session, tuple(plan.names),
                              frozenset(kept), time.time())
            self.stale_keys.append(record)
            if self.stale_file is not None:
                save_stale_keys(self.stale_file, [*load_stale_keys(self.stale_file), record])
            detail += (f"; old key {old_id} stays loaded for "
                       f"{len(kept)} IKE SA(s) made with the old certificate")
        if plan.notes:
            detail += "; " + "; ".join(plan.notes)
        return detail


def reload_pinned_connections(uri: str, cert_path: Path | str, *,
                              swanctl_conf: Path | str = DEFAULT_SWANCTL_CONF,
                              swanctl_dir: Path | str | None = None,
                              connections: Iterable[str] = (),
                              timeout: float = DEFAULT_TIMEOUT,
                              connect: SocketFactory | None = None) -> tuple[str, ...]:
    """Re-send the connections that pin ``cert_path`` with the file's current content.

    A pinned connection carries its certificate inside its config, so loading
    the certificate alone does not change what it uses. The charon start hook
    calls this after committing a renewal. Returns the connections re-sent
    (none when swanctl.conf pins nothing).

    Raises:
        ConfigError: swanctl.conf cannot be parsed.
        DeployUnavailable: charon cannot be reached.
        DeployError: charon refused a connection.
    """
    conf_path = Path(swanctl_conf)
    if not conf_path.exists():
        return ()
    base = Path(swanctl_dir) if swanctl_dir is not None else conf_path.parent
    conf = parse_file(conf_path)
    names = connections_using_cert(conf, base, cert_path)
    wanted = set(connections)
    names = tuple(n for n in names if not wanted or n in wanted)
    if not names:
        return ()
    messages: Mapping[str, Mapping[str, object]] = {
        n: build_load_conn(conf, n, base) for n in names}
    with open_session(uri, timeout, connect) as conn:
        for n in names:
            try:
                conn.call("load-conn", messages[n])
            except (CommandFailed, ConnectionLost) as e:
                raise query_error(uri, e) from None
    return names


def choose_deployer(
    uri: str,
    cert_path: Path | str,
    *,
    swanctl_conf: Path | str = DEFAULT_SWANCTL_CONF,
    swanctl_dir: Path | str | None = None,
    connections: Iterable[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    stale_file: Path | None = None,
    connect: SocketFactory | None = None,
) -> ViciDeployer | PinnedDeployer:
    """The deployer for a certificate: pinned mode when swanctl.conf pins the file.

    A connection whose ``local*.certs`` names ``cert_path`` (restricted to
    ``connections`` when given) selects :class:`PinnedDeployer`; otherwise
    identity mode (:class:`ViciDeployer`). A missing swanctl.conf means
    identity mode.

    Raises:
        ConfigError: swanctl.conf cannot be parsed, or ``uri`` is not usable.
    """
    conf_path = Path(swanctl_conf)
    base = Path(swanctl_dir) if swanctl_dir is not None else conf_path.parent
    if conf_path.exists():
        pinned = connections_using_cert(parse_file(conf_path), base, cert_path)
        wanted = tuple(connections)
        if pinned and (not wanted or set(pinned) & set(wanted)):
            return PinnedDeployer(uri, swanctl_conf=conf_path, swanctl_dir=base,
                                  connections=wanted, timeout=timeout, stale_file=stale_file,
                                  connect=connect)
    return ViciDeployer(uri, timeout=timeout, connect=connect)
