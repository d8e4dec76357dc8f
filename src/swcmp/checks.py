"""The checks that guard ``enable-auto-update``, each with the command that fixes it.

:func:`run_checks` reads files (certificates, keys, the MAC secret file's
metadata) but changes nothing and takes the time as an argument, so its result
depends only on the session, the files and ``now``. The order of the results
is part of the interface (``swcmp session check`` prints them in this order):

1. ``entity``: an entity (subject DN) is set and has a common name;
2. ``ca-name``: the CA name is set (and, if a trust anchor carries the same
   attributes, in the same RDN order);
3. ``server-url``: the server URL is set and parses;
4. ``auth-cert``: the authentication certificate is set and present;
   ``auth-cert-key``: it matches its key; ``auth-cert-chain``: it chains to a
   trust anchor; ``auth-cert-validity``: it is valid now;
5. ``key-pair``: the key pair is set, present, a private key and mode 0600;

then ours: ``trust-anchor`` (present and parses), ``mac-ref`` and
``mac-secret`` (only when ``ir_auth`` is ``mac``), then any extra checks the
caller passes in (the strongSwan binding check plugs in there).

Each result has a level: ``ok``, ``warn`` or ``fail``. Every built-in check
fails when it does not pass: SPEC.md's five prerequisites and the safety items
(key matches certificate, chain, validity, trust anchor, secret file) guard the
renewal itself. Items about the running system (is charon reachable, does a
connection use the certificate) only warn: the renewal commits its files
without charon, and the charon start hook loads them, so a daemon that is down
today must not block turning auto-update on. ``enable-auto-update`` is refused
only on a ``fail``.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from swcmp import keystore
from swcmp.checkresult import FAIL, LEVELS, OK, PENDING, WARN, CheckResult
from swcmp.cmp import certs, keys
from swcmp.errors import CertificateError, ConfigError, SwcmpError
from swcmp.keystore.files import load_key_file
from swcmp.names import common_name, format_dn, format_sans
from swcmp.paths import Paths
from swcmp.session import FIELDS, Session, auth_credentials, hint_for

__all__ = [
    "FAIL",
    "LEVELS",
    "OK",
    "PENDING",
    "WARN",
    "CheckResult",
    "ExtraCheck",
    "all_passed",
    "failed",
    "run_checks",
    "warnings",
]

# An extra check gets the same inputs as the built-in ones. It may raise a
# SwcmpError, which becomes a failed result named after the check.
ExtraCheck = Callable[[Session, Paths, datetime], CheckResult]


def _pass(name: str, detail: str) -> CheckResult:
    return CheckResult(name=name, level=OK, detail=detail)


def _fail(name: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(name=name, level=FAIL, detail=detail, fix=fix)


def _set_cmd(session: Session, *options: str) -> str:
    return f"swcmp session set {session.name} " + " ".join(options)


def _q(path: Path) -> str:
    return shlex.quote(str(path))


# --- loading files, errors as text -----------------------------------------------------


def _load_certs(path: Path) -> tuple[list[x509.Certificate], str]:
    """Certificates in ``path`` (PEM, possibly several, or DER) and an error text."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], f"{path} does not exist"
    except OSError as e:
        return [], f"cannot read {path}: {e.strerror}"
    try:
        return certs.load_certificates(data), ""
    except CertificateError:
        return [], f"{path} does not hold a PEM or DER X.509 certificate"


def _spki(key: PrivateKeyTypes | x509.Certificate) -> bytes:
    public = key.public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def certs_is_ca(cert: x509.Certificate) -> bool:
    """Whether ``cert`` is a CA certificate (basicConstraints with cA true)."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _anchors(session: Session) -> list[x509.Certificate]:
    anchors: list[x509.Certificate] = []
    for path in session.trust:
        found, _ = _load_certs(path)
        anchors.extend(found)
    return anchors


# --- the checks --------------------------------------------------------------------------


def _san_set(cert: x509.Certificate) -> set[x509.GeneralName]:
    try:
        return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return set()


def names_changed(session: Session, cert: x509.Certificate) -> str:
    """What differs between the session's entity and SANs and ``cert``'s ("" if nothing).

    A key update (KUR) copies the subject and subjectAltNames of the certificate it
    updates, so a change made with ``session set`` after the first request needs a
    certificate request (CR) that carries the new names.
    """
    changed = []
    if session.entity_dn is not None and session.entity_dn != cert.subject:
        changed.append(f"entity {format_dn(session.entity_dn)} (certificate: "
                       f"{format_dn(cert.subject)})")
    if session.san_names and set(session.san_names) != _san_set(cert):
        wanted = ", ".join(format_sans(session.san_names)) or "none"
        has = ", ".join(format_sans(_san_set(cert))) or "none"
        changed.append(f"SANs {wanted} (certificate: {has})")
    return "; ".join(changed)


def _check_entity(session: Session, paths: Paths) -> CheckResult:
    fix = _set_cmd(session, "--entity '/C=DE/O=Example/CN=gw1.example.net'")
    if session.entity_dn is None:
        return _fail("entity", "no entity (subject DN) is set", fix)
    shown = format_dn(session.entity_dn)
    cn = common_name(session.entity_dn)
    if not cn:
        return _fail("entity", f"the entity {shown} has no common name (CN)", fix)
    own = _own_cert(session, paths)
    changed = names_changed(session, own) if own is not None else ""
    if changed and own is not None:
        return _fail(
            "entity",
            f"changed since the certificate was issued: {changed}; a key update keeps the "
            "certificate's names",
            f"run `swcmp request certificate {session.name}` (a CR with the new names); "
            f"if the CA rewrites the names, set them as issued: "
            f"{_set_cmd(session, '--entity ' + shlex.quote(format_dn(own.subject)))}",
        )
    return _pass("entity", f"entity {shown}")


def _known_cas(session: Session, paths: Paths) -> list[x509.Certificate]:
    """The CA certificates a session knows: anchors, then those its CA sent (x509ca/)."""
    known = _anchors(session)
    for path in paths.ca_cert_files(session.name):
        found, _ = _load_certs(path)
        known.extend(found)
    return known


def _own_cert(session: Session, paths: Paths) -> x509.Certificate | None:
    """The session's current certificate (x509/NAME.crt), None before the first request."""
    found, _ = _load_certs(paths.cert_file(session.name))
    return found[0] if found else None


def _edit_distance(a: str, b: str) -> int:
    """Insertions, deletions, substitutions and swaps of neighbours from ``a`` to ``b``."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            d = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                d = min(d, prev2[j - 2] + 1)
            cur.append(d)
        prev2, prev = prev, cur
    return prev[-1]


def _typo_of(typed: str, known: str) -> bool:
    """Whether ``typed`` looks like a slip of ``known``: other case, or one edit (two in a
    long name)."""
    if typed == known:
        return False
    a, b = typed.lower(), known.lower()
    return _edit_distance(a, b) <= (2 if len(b) >= 24 else 1)


def _check_ca_name(session: Session, paths: Paths) -> CheckResult:
    fix = _set_cmd(session, "--ca-name '/C=DE/O=Example/CN=Example Issuing CA'")
    if session.ca_dn is None:
        return _fail("ca-name", "no CA name is set", fix)
    shown = format_dn(session.ca_dn)
    wanted = sorted(a.rfc4514_string() for a in session.ca_dn)
    anchors = _anchors(session)
    for anchor in anchors:
        if anchor.subject == session.ca_dn:
            return _pass("ca-name", f"CA name {shown} (matches trust anchor)")
        if sorted(a.rfc4514_string() for a in anchor.subject) == wanted:
            # Same attributes, different order: the CA would not recognise itself
            # as the recipient, and the trust anchor would not be selected.
            right = format_dn(anchor.subject)
            return _fail(
                "ca-name",
                f"CA name {shown} has the RDNs of trust anchor {right} in another order",
                _set_cmd(session, f"--ca-name {shlex.quote(right)}"),
            )
    own = _own_cert(session, paths)
    known = _known_cas(session, paths)
    if any(c.subject == session.ca_dn for c in known) or (
            own is not None and own.issuer == session.ca_dn):
        return _pass("ca-name", f"CA name {shown} (the CA that issued the certificate)")
    candidates = [format_dn(c.subject) for c in known]
    if own is not None:
        candidates.append(format_dn(own.issuer))
    close = [c for c in candidates if _typo_of(shown, c)]
    if close:
        return _fail(
            "ca-name",
            f"CA name {shown} is the subject of no trust anchor or CA certificate; "
            f"{close[0]} is (a typo?)",
            _set_cmd(session, f"--ca-name {shlex.quote(close[0])}"),
        )
    if not anchors:
        return _pass("ca-name", f"CA name {shown}")
    # Not a typo of a known CA: an issuing CA below the anchor, or a CMP server that
    # names itself otherwise than the issuer (the Siemens Mock CA does): only a warning.
    known_text = "; ".join(dict.fromkeys(candidates))
    return CheckResult(
        name="ca-name",
        level=WARN,
        detail=f"CA name {shown} is the subject of no trust anchor or CA certificate known "
        f"to the session ({known_text}); right for a CA that is no anchor, wrong if mistyped",
        fix=f"compare it with the CA certificate; {_set_cmd(session, '--ca-name DN')}",
    )


def name_checks(session: Session, paths: Paths) -> list[CheckResult]:
    """The ``entity`` and ``ca-name`` checks alone (``session set`` warns with them)."""
    return [_check_entity(session, paths), _check_ca_name(session, paths)]


def _check_server_url(session: Session) -> CheckResult:
    fix = _set_cmd(session, "--server-url http://ca.example.net:8080/pkix/")
    if session.server_url is None:
        return _fail("server-url", "no server URL is set", fix)
    # Session construction already validated the URL (swcmp.cmp.urls).
    bundle = session.tls_ca_bundle
    urls = [session.server_url, *(i.split("=", 1)[1] for i in session.operation_urls)]
    if any(u.lower().startswith("https:") for u in urls) and bundle is not None:
        _, error = _load_certs(bundle)
        if error:
            return _fail(
                "server-url",
                f"the TLS CA bundle for {session.server_url}: {error}",
                _set_cmd(session, "--tls-ca-bundle FILE")
                + f" (or `swcmp session unset {session.name} tls_ca_bundle` for the system store)",
            )
    routing = ""
    if session.profile_label is not None or session.operation_paths != "none":
        from swcmp.cmp.urls import with_profile

        base = (with_profile(session.server_url, session.profile_label)
                if session.profile_label is not None else session.server_url)
        routing = f"; messages to {base}" + {
            "labels": "/<operation label>", "body": "/<body type>"}.get(
            session.operation_paths, "")
    if session.operation_urls:
        routing += "; own URLs for " + ", ".join(
            i.split("=", 1)[0] for i in session.operation_urls)
    return _pass("server-url", f"server URL {session.server_url}{routing}")


def _check_auth_cert(session: Session, paths: Paths, now: datetime) -> list[CheckResult]:
    """Check 4 as four results: present, matches key, chains, valid now."""
    names = ("auth-cert", "auth-cert-key", "auth-cert-chain", "auth-cert-validity")
    cert_path, key_path = auth_credentials(session, paths)
    set_both = _set_cmd(session, "--auth-cert FILE --auth-key FILE")
    results: list[CheckResult] = []

    def skipped(reason: str) -> list[CheckResult]:
        return [_fail(n, f"not checked: {reason}", f"fix {names[0]!r} first") for n in names[1:]]

    own = paths.cert_file(session.name)
    if session.auth_cert is None and (cert_path is None or cert_path == own) and not own.exists():
        # Before the first request: the certificate is what `request initial` makes.
        ir = (f"run `swcmp request initial {session.name}` (it sets the certificate), "
              f"or `{set_both}` for one from elsewhere")
        return [
            CheckResult(name="auth-cert", level=PENDING,
                        detail=f"no certificate yet ({own}); the first request gets it", fix=ir),
            *(CheckResult(name=n, level=PENDING, detail="checked once there is a certificate",
                          fix=ir) for n in names[1:]),
        ]
    if cert_path is None:
        results.append(
            _fail(
                "auth-cert",
                "no authentication certificate: none is set and the session has no "
                f"certificate yet ({paths.cert_file(session.name)})",
                f"run `swcmp request initial {session.name}` (it sets the certificate), "
                f"or `{set_both}`",
            )
        )
        return results + skipped("no authentication certificate")
    loaded, error = _load_certs(cert_path)
    if error:
        results.append(
            _fail(
                "auth-cert",
                f"authentication certificate: {error}",
                f"`{_set_cmd(session, '--auth-cert FILE')}` with an existing certificate file, "
                f"or run `swcmp request initial {session.name}`",
            )
        )
        return results + skipped("authentication certificate unusable")
    cert = loaded[0]
    results.append(
        _pass("auth-cert", f"authentication certificate {cert_path}: {format_dn(cert.subject)}")
    )

    # Does it match its key?
    if key_path is None and session.auth_key is None and session.key is not None:
        # the session's key is no file (a token's): the key store's items check it
        results.append(_pass("auth-cert-key", "the key is in a token: see token-key-cert"))
    elif key_path is None:
        results.append(
            _fail(
                "auth-cert-key",
                "no key for the authentication certificate (auth_key and key are unset)",
                _set_cmd(session, "--auth-key FILE") + " (or --key NAME)",
            )
        )
    else:
        key, error = load_key_file(key_path)
        if key is None:
            results.append(
                _fail(
                    "auth-cert-key",
                    f"authentication key: {error}",
                    _set_cmd(session, "--auth-key FILE")
                    + " with the certificate's unencrypted key",
                )
            )
        elif _spki(key) != _spki(cert):
            results.append(
                _fail(
                    "auth-cert-key",
                    f"the authentication certificate {cert_path} does not belong to the key "
                    f"{key_path}",
                    f"{_set_cmd(session, '--auth-key FILE')} with the key of {cert_path}, or "
                    f"{_set_cmd(session, '--auth-cert FILE')} with the certificate of {key_path}",
                )
            )
        else:
            results.append(_pass("auth-cert-key", f"matches the key {key_path}"))

    results.append(_check_chain(session, paths, cert, now))

    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    renew = f"run `swcmp request initial {session.name}` for a new certificate, then "
    if now < not_before:
        results.append(
            _fail(
                "auth-cert-validity",
                f"the authentication certificate is not valid before {not_before:%Y-%m-%d %H:%M} "
                "UTC: check this host's clock",
                "fix the clock (NTP) or " + renew + "check again",
            )
        )
    elif now > not_after:
        results.append(
            _fail(
                "auth-cert-validity",
                f"the authentication certificate expired on {not_after:%Y-%m-%d %H:%M} UTC; "
                "a key update (KUR) needs an unexpired certificate",
                renew + f"`{_set_cmd(session, '--auth-cert FILE')}` if it is stored elsewhere",
            )
        )
    else:
        left = not_after - now
        results.append(
            _pass(
                "auth-cert-validity",
                f"valid until {not_after:%Y-%m-%d %H:%M} UTC ({left.days} days left)",
            )
        )
    return results


def _check_chain(session: Session, paths: Paths, cert: x509.Certificate,
                 now: datetime) -> CheckResult:
    # The same chain building as the renewal uses on the certificates the CA returns,
    # so a chain this check passes is one a renewal accepts.
    fix = _set_cmd(session, "--trust FILE") + " with the CA certificate that issued it"
    anchors = _anchors(session)
    if not anchors:
        return _fail("auth-cert-chain", "no trust anchor is configured or readable", fix)
    intermediates: list[x509.Certificate] = []
    for path in paths.ca_cert_files(session.name):
        found, _ = _load_certs(path)
        intermediates.extend(found)
    try:
        chain = certs.build_chain(cert, anchors=anchors, untrusted=intermediates, now=now,
                                  check_leaf_validity=False)
    except CertificateError as e:
        return _fail("auth-cert-chain", str(e.args[0]), fix)
    via = [format_dn(c.subject) for c in chain[1:-1]]
    through = f" via {', '.join(via)}" if via else ""
    return _pass("auth-cert-chain", f"issued by trust anchor {format_dn(chain[-1].subject)}"
                 f"{through}")


def _check_trust(session: Session, now: datetime) -> CheckResult:
    fix = _set_cmd(session, "--trust FILE") + " with the CA certificate (PEM or DER)"
    if not session.trust:
        return _fail("trust-anchor", "no trust anchor is set", fix)
    subjects: list[str] = []
    for path in session.trust:
        found, error = _load_certs(path)
        if error:
            return _fail("trust-anchor", error, fix)
        for cert in found:
            if cert.not_valid_after_utc < now:
                return _fail(
                    "trust-anchor",
                    f"trust anchor {format_dn(cert.subject)} in {path} expired on "
                    f"{cert.not_valid_after_utc:%Y-%m-%d} UTC",
                    fix.replace("the CA certificate", "the CA's current certificate"),
                )
            if not certs_is_ca(cert):
                return _fail(
                    "trust-anchor",
                    f"{path} holds {format_dn(cert.subject)}, which is not a CA certificate "
                    "(no basicConstraints cA): an end-entity certificate cannot verify the "
                    "CA's answers",
                    fix,
                )
            subjects.append(format_dn(cert.subject))
    return _pass("trust-anchor", "trust anchors: " + "; ".join(subjects))


def _check_mac_ref(session: Session) -> CheckResult:
    if session.mac_ref is None:
        return _fail(
            "mac-ref",
            "ir_auth is mac but no MAC reference value is set",
            _set_cmd(session, "--mac-ref REFERENCE") + " with the value the CA operator gave",
        )
    return _pass("mac-ref", "MAC reference value is set")


def _check_mac_secret(session: Session) -> CheckResult:
    path = session.mac_secret_file
    fix = _set_cmd(session, "--mac-secret-file FILE") + " (a file holding only the secret, 0600)"
    if path is None:
        return _fail("mac-secret", "ir_auth is mac but no MAC secret file is set", fix)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return _fail("mac-secret", f"the MAC secret file {path} does not exist", fix)
    except OSError as e:
        return _fail("mac-secret", f"cannot access the MAC secret file {path}: {e.strerror}", fix)
    if not stat.S_ISREG(info.st_mode):
        return _fail("mac-secret", f"the MAC secret file {path} is not a regular file", fix)
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        return _fail(
            "mac-secret",
            f"the MAC secret file {path} has mode {mode:04o}; others may read the secret",
            f"chmod 600 {_q(path)}",
        )
    if info.st_size == 0:
        return _fail(
            "mac-secret",
            f"the MAC secret file {path} is empty",
            f"write the secret the CA operator gave into {_q(path)}",
        )
    # Only metadata is looked at: the secret itself is read when a request needs it.
    return _pass("mac-secret", f"MAC secret file {path} (mode {mode:04o})")


def _run_extra(check: ExtraCheck, session: Session, paths: Paths, now: datetime) -> CheckResult:
    name = str(getattr(check, "check_name", getattr(check, "__name__", "extra")))
    try:
        return check(session, paths, now)
    except SwcmpError as e:
        return _fail(name, Exception.__str__(e), hint_for(e, session.name) or "see the message")


def run_checks(
    session: Session,
    paths: Paths,
    *,
    now: datetime,
    extra_checks: Sequence[ExtraCheck] = (),
) -> list[CheckResult]:
    """Run every check for ``session``, in the documented order.

    Args:
        session: the session to check.
        paths: where the session's key, certificates and CA certificates live.
        now: the current time, timezone-aware (certificate validity is checked against it).
        extra_checks: further checks appended after the built-in ones, each called
            as ``check(session, paths, now)``. This is the extension point for the
            strongSwan binding check (the connections exist in charon and use the
            session's certificate). A check that raises a SwcmpError yields a failed
            result named by its ``check_name`` attribute or ``__name__``.

    Returns:
        One result per check; auto-update may be enabled unless one is ``fail``.

    Raises:
        ValueError: ``now`` is naive.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("run_checks needs a timezone-aware 'now'")
    results = [
        _check_entity(session, paths),
        _check_ca_name(session, paths),
        _check_server_url(session),
    ]
    results.extend(_check_auth_cert(session, paths, now))
    results.extend(keystore.open(session, paths).checks())
    results.append(_check_trust(session, now))
    if session.ir_auth == "mac":
        results.append(_check_mac_ref(session))
        results.append(_check_mac_secret(session))
    results.extend(_run_extra(check, session, paths, now) for check in extra_checks)
    return results


def failed(results: Iterable[CheckResult]) -> list[CheckResult]:
    """The results at level ``fail`` (they block auto-update)."""
    return [r for r in results if r.level == FAIL]


def warnings(results: Iterable[CheckResult]) -> list[CheckResult]:
    """The results at level ``warn``."""
    return [r for r in results if r.level == WARN]


def all_passed(results: Iterable[CheckResult]) -> bool:
    """Whether no result fails (warnings allowed; True for no results at all)."""
    return not failed(results)


# --- the files a `session set` names, checked before the session is written

# Settings that name files which must exist when they are set.
_FILE_FIELDS = ("mac_secret_file", "auth_cert", "auth_key", "trust", "tls_ca_bundle",
                "server_cert", "extra_certs", "tls_client_cert", "tls_client_key",
                "pkcs11_module", "pin_file")
_CERT_FIELDS = ("auth_cert", "trust", "tls_ca_bundle", "server_cert", "extra_certs",
                "tls_client_cert")


def _refused(message: str, hint: str) -> ConfigError:
    return ConfigError(message).with_hint(hint)


def check_setting_files(session: Session, changed: Sequence[str], paths: Paths) -> None:
    """Refuse files that are missing, unreadable or not what the setting needs.

    Run before anything is written, so a bad value leaves the session unchanged.
    Also refuses an authentication certificate that does not belong to its key.

    Raises:
        ConfigError: naming the option, the file and what to do.
    """
    for name in changed:
        if name not in _FILE_FIELDS:
            continue
        option = FIELDS[name].option
        value = getattr(session, name)
        files: tuple[Path, ...] = value if isinstance(value, tuple) else (value,)
        for path in files:
            if path is None:
                continue
            if not path.is_file():
                why = "is not a regular file" if path.exists() else "does not exist"
                raise _refused(
                    f"{option} {path}: the file {why}",
                    "give the path of an existing file (relative paths are taken from "
                    "the current directory)",
                )
            try:
                data = path.read_bytes()
            except OSError as e:
                raise _refused(
                    f"{option} {path}: cannot read: {e.strerror}",
                    "run swcmp as root or fix the file's permissions",
                ) from None
            if name in _CERT_FIELDS:
                try:
                    loaded = certs.load_certificates(data)
                except SwcmpError:
                    raise _refused(
                        f"{option} {path}: not a PEM or DER X.509 certificate",
                        "give the certificate file itself (PEM with BEGIN CERTIFICATE, or DER)",
                    ) from None
                not_ca = [c for c in loaded if not certs_is_ca(c)]
                if name == "trust" and not_ca:
                    raise _refused(
                        f"{option} {path}: {format_dn(not_ca[0].subject)} is not a CA "
                        "certificate (no basicConstraints cA); a trust anchor verifies the "
                        "CA's answers and must be the CA's own certificate",
                        "give the certificate of the CA (or its root) the CA operator "
                        "gave you, not the gateway's",
                    )
            elif name in ("auth_key", "tls_client_key"):
                try:
                    keys.load_private_key(data)
                except SwcmpError as e:
                    raise _refused(
                        f"{option} {path}: {Exception.__str__(e)}",
                        "give the certificate's unencrypted private key (PEM or DER)",
                    ) from None
                mode = path.stat().st_mode & 0o777
                if name == "tls_client_key" and mode & 0o077:
                    raise _refused(f"{option} {path}: mode {mode:04o} lets others read the key",
                                  f"chmod 600 {path}")
            elif name == "mac_secret_file":
                mode = path.stat().st_mode & 0o777
                if mode & 0o077:
                    raise _refused(
                        f"{option} {path}: mode {mode:04o} lets others read the MAC secret",
                        f"chmod 600 {path}")
            elif name == "pin_file":
                # the rules of use (0600, no symlink, not empty), applied when it is set
                from swcmp.keystore.pkcs11 import read_pin

                try:
                    read_pin(path, session=session.name)
                except ConfigError as e:
                    raise _refused(f"{option} {path}: {Exception.__str__(e)}", e.hint) from None
            del data  # a secret file's content is never kept or shown

    if "auth_cert" not in changed and "auth_key" not in changed:
        return
    cert_path, key_path = auth_credentials(session, paths)
    if cert_path is None or key_path is None or not key_path.is_file():
        return
    try:
        cert = certs.load_certificate(cert_path.read_bytes())
        key = keys.load_private_key(key_path.read_bytes())
    except (OSError, SwcmpError):
        return  # the checks report unreadable defaults; only a real mismatch is refused here
    if keys.spki_der(key) != certs.spki_of(cert):
        raise _refused(
            f"the authentication certificate {cert_path} does not belong to the key {key_path}",
            "give the certificate and its own key together: "
            f"swcmp session set {session.name} --auth-cert CERT --auth-key KEY",
        )
