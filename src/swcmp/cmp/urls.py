"""CMP server URLs (RFC 6712 3.6: HTTP or HTTPS, POSTed to), checked before use, and
where each message of a transaction goes.

By default every message goes to one URL. CAs that route by path take more:

- RFC 9811 / RFC 9483 3.3: the path ``/.well-known/cmp/p/<profile>`` names a CA or
  certificate profile, and an operation label added to it names the PKI management
  operation (``initialization``, ``keyupdate``, ``getcacerts``, ...). The certConf and
  pollReq of a transaction go to the URL of its operation.
- Body types (the Siemens Mock CA's ``/issuing/<body>``): every message, the certConf
  and pollReq included, goes to the base URL plus its own body type.
- One URL per operation (EJBCA's CMP aliases: ir with MAC on one alias, kur with
  signature on another): explicit URLs that win over the rest.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from swcmp.cmp import oids
from swcmp.cmp.choices import OPERATION_PATHS
from swcmp.cmp.errors import ConfigError

#: RFC 9483 3.3's operation label of each request body that starts a transaction.
BODY_OPERATIONS: Mapping[str, str] = {
    "ir": "initialization", "cr": "certification", "kur": "keyupdate", "p10cr": "pkcs10",
    "rr": "revocation",
}
#: The operation label of a genm by the id-it of its (first) InfoTypeAndValue. RFC 9483
#: has no label for currentCRL (RFC 4210); it goes where crlStatusList goes.
GENM_OPERATIONS: Mapping[str, str] = {
    oids.IT_CA_CERTS: "getcacerts", oids.IT_ROOT_CA_CERT: "getrootupdate",
    oids.IT_CERT_REQ_TEMPLATE: "getcertreqtemplate",
    oids.IT_CRL_STATUS_LIST: "getcrls", oids.IT_CURRENT_CRL: "getcrls",
}
#: Every operation label swcmp sends (RFC 9483 3.3, table 1).
OPERATIONS: tuple[str, ...] = (*BODY_OPERATIONS.values(), *dict.fromkeys(
    GENM_OPERATIONS.values()))
#: Names an ``operation_url`` may use besides the labels: the request body types, and
#: ``genm`` for every general message at once.
OPERATION_ALIASES: Mapping[str, str] = {**BODY_OPERATIONS, "genm": "genm"}
_GENM = frozenset(GENM_OPERATIONS.values())
_LABEL_RE = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_WELL_KNOWN = "/.well-known/cmp"


def _bad(message: str, hint: str, setting: str) -> ConfigError:
    return ConfigError(message).with_hint(hint, setting=setting)


def check_server_url(value: str, setting: str = "server_url") -> str:
    """Check a CMP server URL: http or https, a host, a valid port, no credentials, no
    fragment. ``setting`` is named in the error (each per-operation URL is checked too).

    Returns:
        The URL without surrounding blanks.

    Raises:
        ConfigError: the URL is unusable, with an example of a good one.
    """
    text = value.strip()
    hint = (
        "write it like http://ca.example.net:8080/pkix/ or https://ca.example.net/.well-known/cmp"
    )
    what = "server URL" if setting == "server_url" else "URL"
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a bad port
    except ValueError as e:
        raise _bad(f"invalid {what} {value!r}: {e}", hint, setting) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _bad(f"invalid {what} {value!r}: the scheme must be http or https", hint, setting)
    if not parts.hostname:
        raise _bad(f"invalid {what} {value!r}: no host", hint, setting)
    if "@" in parts.netloc:
        raise _bad(f"invalid {what}: it carries a user name or password",
                   "a URL is shown in logs and `session show`: authenticate with the MAC or "
                   "a TLS client certificate, not in the URL", setting)
    if port == 0:
        raise _bad(f"invalid {what} {value!r}: port 0", hint, setting)
    if parts.fragment or "#" in text:
        raise _bad(f"invalid {what} {value!r}: a URL for POST has no #fragment", hint, setting)
    if any(c.isspace() for c in text) or not text.isascii():
        raise _bad(f"invalid {what} {value!r}: spaces or non-ASCII characters", hint, setting)
    host = parts.hostname
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _bad(f"invalid {what} {value!r}: bad IPv6 address", hint, setting) from None
    return text


def append_path(url: str, segment: str) -> str:
    """``url`` with ``segment`` added as the last path segment (query kept)."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/") + "/" + segment
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def check_profile_label(value: str) -> str:
    """An RFC 9811 profile label: one path segment of unreserved characters."""
    text = value.strip()
    if not _LABEL_RE.fullmatch(text) or text in (".", ".."):
        # '.' and '..' are dot-segments, which the server removes (RFC 3986 5.2.4)
        raise _bad(f"invalid profile_label {value!r}: 1-64 letters, digits, '.', '_', '~' "
                   "or '-', not '.' or '..'", "give the label the CA operator names in "
                   "/.well-known/cmp/p/<label>", "profile_label")
    return text


def with_profile(url: str, label: str) -> str:
    """``url`` (the CA's address, or its ``/.well-known/cmp``) with the RFC 9811 profile
    path ``/.well-known/cmp/p/<label>``.

    Raises:
        ConfigError: the URL already has another path.
    """
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if path not in ("", _WELL_KNOWN):
        raise _bad(f"the server URL {url} has the path {parts.path}, and a profile label "
                   f"makes the path {_WELL_KNOWN}/p/{label}",
                   "give the server URL without a path (https://ca.example.net), or drop "
                   "the profile label and write the whole path in the server URL",
                   "profile_label")
    return urlunsplit((parts.scheme, parts.netloc, f"{_WELL_KNOWN}/p/{label}", parts.query,
                       ""))


def operation_name(text: str) -> str:
    """The operation an ``operation_url`` names: an RFC 9483 label, a body type
    (``ir``, ``kur``, ...) or ``genm`` (every general message)."""
    key = text.strip().lower()
    key = OPERATION_ALIASES.get(key, key)
    if key != "genm" and key not in OPERATIONS:
        raise _bad(f"unknown operation {text.strip()!r}",
                   "use one of " + ", ".join((*OPERATIONS, *OPERATION_ALIASES)),
                   "operation_urls")
    return key


def parse_operation_urls(items: Iterable[str]) -> tuple[str, ...]:
    """Check ``OPERATION=URL`` items; returns them as ``label=URL`` (aliases replaced).

    Raises:
        ConfigError: no ``=``, an unknown operation, an operation given twice, a bad URL.
    """
    out: dict[str, str] = {}
    for item in items:
        name, sep, url = item.partition("=")
        if not sep:
            raise _bad(f"invalid operation URL {item!r}: write OPERATION=URL",
                       "e.g. keyupdate=https://ca.example.net/ejbca/publicweb/cmp/kur",
                       "operation_urls")
        op = operation_name(name)
        if op in out:
            raise _bad(f"two URLs for the operation {op}", "give each operation once",
                       "operation_urls")
        out[op] = check_server_url(url, "operation_urls")
    return tuple(f"{k}={v}" for k, v in out.items())


@dataclass(frozen=True)
class Route:
    """Where the messages of one transaction go: ``url``, or with ``per_body`` the
    ``url`` plus each message's body type."""

    url: str
    per_body: bool = False

    def message_url(self, body: str) -> str:
        """The URL of a message with body type ``body`` (``ir``, ``certConf``, ...)."""
        return append_path(self.url, body) if self.per_body else self.url


@dataclass(frozen=True)
class Endpoints:
    """A session's URLs: ``server_url`` (with its profile label applied), how paths are
    formed (:data:`OPERATION_PATHS`) and the explicit per-operation URLs."""

    base: str
    paths: str = "none"
    explicit: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.paths not in OPERATION_PATHS:
            raise ValueError(f"operation paths {self.paths!r}")

    @classmethod
    def build(cls, server_url: str, *, paths: str = "none", profile_label: str | None = None,
              operation_urls: Iterable[str] = ()) -> Endpoints:
        """From the session's settings (checked again here)."""
        base = check_server_url(server_url)
        if profile_label is not None:
            base = with_profile(base, check_profile_label(profile_label))
        explicit = dict(i.split("=", 1) for i in parse_operation_urls(operation_urls))
        return cls(base, paths, explicit)

    @property
    def single(self) -> bool:
        """Every message goes to ``base``: nothing to route."""
        return self.paths == "none" and not self.explicit

    def route(self, operation: str | None, body: str) -> Route:
        """Where a transaction of ``operation`` (an RFC 9483 label; None for a genm with
        no label) whose first message has body type ``body`` sends its messages."""
        if operation is not None:
            url = self.explicit.get(operation)
            if url is None and operation in _GENM:
                url = self.explicit.get("genm")
            if url is not None:
                return Route(url)
        if self.paths == "labels" and operation is not None:
            return Route(append_path(self.base, operation))
        if self.paths == "body":
            return Route(self.base, per_body=True)
        return Route(self.base)


def operation_of(body: str, info_oid: str | None = None) -> str | None:
    """RFC 9483's operation label of a transaction started by ``body`` (with the id-it of
    a genm's first item); None when it has none."""
    if body == "genm":
        return GENM_OPERATIONS.get(info_oid or "")
    return BODY_OPERATIONS.get(body)
