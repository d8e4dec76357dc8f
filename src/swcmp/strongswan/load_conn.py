"""The ``load-conn`` messages swanctl builds from swanctl.conf, and which connections
name a certificate file.

load-conn
    Every key and subsection of ``connections.<name>``; the keys in
    :data:`LIST_KEYS` become lists (split at ``,``, spaces trimmed, quoted
    items kept whole); the keys in :data:`FILE_LIST_KEYS` become lists of file
    contents: ``certs`` relative to ``x509/``, ``cacerts`` relative to
    ``x509ca/``, ``pubkeys`` relative to ``pubkey/`` under the swanctl
    directory (absolute paths as given), ``0x...``/``0s...`` items are inline
    hex/base64 blobs.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from swcmp.errors import ConfigError
from swcmp.strongswan.swanctl_conf import ConfSection

log = logging.getLogger(__name__)

LIST_KEYS = frozenset({
    "local_addrs", "remote_addrs", "proposals", "esp_proposals", "ah_proposals",
    "local_ts", "remote_ts", "vips", "pools", "groups", "cert_policy",
})
"""Keys swanctl sends as lists of strings (compared case-insensitively, as swanctl does)."""

FILE_LIST_KEYS = frozenset({"certs", "cacerts", "pubkeys"})
"""Keys swanctl sends as lists of file contents (compared case-insensitively)."""

SWANCTL_DIRS = {"certs": "x509", "cacerts": "x509ca", "pubkeys": "pubkey"}
"""The swanctl sub-directory a relative file name is looked up in (exact key names only)."""


class LoadConnError(ConfigError):
    """A ``load-conn`` message cannot be built (no such connection, unreadable file)."""


# --------------------------------------------------------------------------- load-conn


def split_list(value: str, sep: str = ",", trim: str = " ") -> list[str]:
    """Split a comma list like strongSwan's token enumerator.

    Separators and ``trim`` characters before an item are skipped (so there are
    no empty items), an item starting with ``"`` or ``'`` runs to the matching
    quote, other items end at the next separator with ``trim`` characters cut
    off the end.
    """
    items: list[str] = []
    pos, n = 0, len(value)
    while True:
        while pos < n and (value[pos] in trim or value[pos] in sep):
            pos += 1
        if pos >= n:
            return items
        if value[pos] in "\"'":
            end = value.find(value[pos], pos + 1)
            if end != -1:
                items.append(value[pos + 1:end])
                pos = end + 1
                continue
        ends = [i for i in (value.find(s, pos) for s in sep) if i != -1]
        end = min(ends) if ends else n
        token = value[pos:end]
        while token and token[-1] in trim:
            token = token[:-1]
        if end == n and not token:
            return items
        items.append(token)
        if end == n:
            return items
        pos = end + 1


def resolve_file_ref(key: str, token: str, swanctl_dir: Path | str) -> Path:
    """The file swanctl reads for one item of a ``certs``/``cacerts``/``pubkeys`` list.

    A relative name is looked up in the key's directory under ``swanctl_dir``
    (only for the exact lower-case key names, like swanctl); an absolute one is
    used as given.
    """
    path = Path(token)
    if path.is_absolute():
        return path
    sub = SWANCTL_DIRS.get(key)
    if sub is None:  # e.g. "CERTS": swanctl opens it relative to its working directory
        return path
    return Path(swanctl_dir) / sub / token


def _inline_blob(token: str) -> bytes | None:
    prefix = token[:2].lower()
    if prefix == "0x":
        digits = "".join(c for c in token[2:] if c not in ": ")
        if len(digits) % 2:
            digits = "0" + digits
        try:
            return bytes.fromhex(digits)
        except ValueError:
            return b""
    if prefix == "0s":
        try:
            return base64.b64decode(token[2:])
        except (binascii.Error, ValueError):
            return b""
    return None


def _resolve_real(path: Path) -> str:
    return os.path.realpath(path)


def _file_list(key: str, value: str, swanctl_dir: Path, where: str,
               overrides: Mapping[str, bytes]) -> list[bytes]:
    blobs: list[bytes] = []
    for token in split_list(value):
        blob = _inline_blob(token)
        if blob is not None:
            blobs.append(blob)
            continue
        path = resolve_file_ref(key, token, swanctl_dir)
        real = _resolve_real(path)
        if real in overrides:
            blobs.append(overrides[real])
            continue
        try:
            blobs.append(path.read_bytes())
        except OSError as e:
            raise LoadConnError(
                f"{where}: loading {key} certificate '{path}' failed: {e.strerror or e}"
            ).with_hint("swanctl --load-conns fails the same way: fix the file name") from None
    return blobs


def _wire(value: str) -> str | bytes:
    """A value as sent: text, or the original bytes when the file was not UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape")
    return value


def _section_message(section: ConfSection, swanctl_dir: Path, where: str,
                     overrides: Mapping[str, bytes]) -> dict[str, object]:
    message: dict[str, object] = {}
    for key, value in section.items():
        lower = key.lower()
        if lower in LIST_KEYS:
            message[key] = [_wire(item) for item in split_list(value)]
        elif lower in FILE_LIST_KEYS:
            message[key] = _file_list(key, value, swanctl_dir, f"{where}.{key}", overrides)
        else:
            message[key] = _wire(value)
    for name, sub in section.sections.items():
        message[name] = _section_message(sub, swanctl_dir, f"{where}.{name}", overrides)
    return message


def build_load_conn(conf: ConfSection, name: str, swanctl_dir: Path | str, *,
                    overrides: Mapping[Path | str, bytes] | None = None) -> dict[str, object]:
    """Build the ``load-conn`` message swanctl sends for connection ``name``.

    Args:
        conf: the parsed swanctl.conf.
        name: the connection (a subsection of ``connections``).
        swanctl_dir: swanctl's directory (``x509/``, ``x509ca/``, ``pubkey/`` are under it).
        overrides: file path -> content to send instead of reading the file
            (used to re-send a connection with the previous certificate). Paths
            are compared after resolving symlinks.

    Returns:
        ``{name: {...}}``: strings, lists of strings, lists of bytes and nested dicts,
        ready for ``vici.Session.load_conn``.

    Raises:
        LoadConnError: there is no such connection, or a referenced file cannot be read.
    """
    section = conf.section("connections")
    conn = section.sections.get(name) if section is not None else None
    if conn is None:
        known = ", ".join(section.sections) if section is not None else ""
        raise LoadConnError(f"swanctl.conf has no connection '{name}'"
                            + (f" (it has: {known})" if known else " (no connections section)"))
    real_overrides = {_resolve_real(Path(p)): data for p, data in (overrides or {}).items()}
    return {name: _section_message(conn, Path(swanctl_dir), f"connections.{name}",
                                   real_overrides)}


# --------------------------------------------------------------------------- references


@dataclass(frozen=True)
class CertReference:
    """A connection's ``local*`` section that names a certificate file in ``certs``.

    Attributes:
        connection: the connection name.
        section: the auth section (``local``, ``local-1``...).
        path: the file swanctl reads for it.
    """

    connection: str
    section: str
    path: Path


def cert_references(conf: ConfSection, swanctl_dir: Path | str) -> tuple[CertReference, ...]:
    """Every file named by ``connections.<name>.local*.certs``, in configuration order."""
    refs: list[CertReference] = []
    connections = conf.section("connections")
    if connections is None:
        return ()
    for name, conn in connections.sections.items():
        for sub_name, sub in conn.sections.items():
            if not sub_name.startswith("local"):
                continue
            for key, value in sub.items():
                if key.lower() != "certs":
                    continue
                for token in split_list(value):
                    if _inline_blob(token) is None:
                        refs.append(CertReference(
                            name, sub_name, resolve_file_ref(key, token, swanctl_dir)))
    return tuple(refs)


def connections_using_cert(conf: ConfSection, swanctl_dir: Path | str,
                           cert_path: Path | str) -> tuple[str, ...]:
    """The connections whose ``local*.certs`` name ``cert_path`` (compared after symlinks)."""
    wanted = _resolve_real(Path(cert_path))
    names: list[str] = []
    for ref in cert_references(conf, swanctl_dir):
        if _resolve_real(ref.path) == wanted and ref.connection not in names:
            names.append(ref.connection)
    return tuple(names)
