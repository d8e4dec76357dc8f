"""``swcmp request cacerts | rootca | revoke | crl | template``: the CA's side of a session, now.

The work is :class:`swcmp.calife.CaLife`'s; these commands parse, call it, record the
result in the session's state like any request, and render it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from swcmp.cli.render import format_serial
from swcmp.cli.requests import _deploy_option, after_request, request
from swcmp.cli.root import (
    CliEnv,
    _env,
    _message,
    _name_argument,
    _now,
    _refuse,
    confirm,
    json_option,
    yes_option,
)
from swcmp.errors import SwcmpError

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from swcmp.calife import CaLife, Result
    from swcmp.cmp.template import CertReqTemplate, Problem
    from swcmp.paths import Paths
    from swcmp.session import Session


def _ca_life(env: CliEnv, no_deploy: bool) -> CaLife:
    from swcmp.calife import CaLife
    from swcmp.cli.requests import _charon

    return CaLife(env.paths, charon=_charon(env, no_deploy))


def _result_text(result: Result) -> str:
    lines = [f"{result.action} for session {result.session}: {result.message}"]
    if result.files:
        lines.append("  files    " + ", ".join(str(p) for p in result.files))
    if result.charon:
        lines.append(f"  charon   {result.charon}")
    return "\n".join(lines)


def _ca_step(name: str, action: str, no_deploy: bool,
             step: Callable[[CaLife, Session], Result]) -> None:
    """Run one CA-life step for NAME, record it like a request, print the result."""
    from swcmp.state import StateStore

    env = _env()
    s = env.store.load(name)
    now = _now()
    try:
        result = step(_ca_life(env, no_deploy), s)
    except SwcmpError as e:
        with StateStore(env.paths).update(s.name) as st:
            st.record(action, False, _message(e), now=now)
        after_request(env, no_deploy=no_deploy)
        raise
    with StateStore(env.paths).update(s.name) as st:
        st.record(action, True, result.message, now=now)
    after_request(env, no_deploy=no_deploy)
    env.emit(result.to_json(), _result_text(result))


@request.command("cacerts")
@_name_argument()
@_deploy_option
@json_option
def request_cacerts(name: str, no_deploy: bool) -> None:
    """Ask the CA for its CA certificates (genm caCerts, RFC 9483 4.3.1).

    Taken only if every certificate is a CA certificate chaining to the session's
    trust anchors: they replace x509ca/NAME-caN.crt (one the current certificate
    still chains through is kept) and are loaded into charon.
    """
    _ca_step(name, "cacerts", no_deploy, lambda life, s: life.refresh_ca_certs(s))


@request.command("rootca")
@_name_argument()
@_deploy_option
@json_option
def request_rootca(name: str, no_deploy: bool) -> None:
    """Ask whether the root CA has a new key (genm rootCaCert, RFC 9483 4.3.2).

    A new root is taken only if newWithOld verifies with the current root (and
    oldWithNew, when sent, with the new key). It is then a trust anchor beside
    the old one, both are stored in x509ca/ and loaded into charon; the old root
    is dropped once it has expired.
    """
    env = _env()
    _ca_step(name, "rootca", no_deploy, lambda life, s: life.update_root(s, store=env.store))


@request.command("revoke")
@_name_argument()
@click.option("--reason", default="unspecified", show_default=True, metavar="REASON",
              shell_complete=lambda ctx, param, incomplete: _complete_reasons(incomplete),
              help="CRL reason: unspecified, keyCompromise, cACompromise, "
              "affiliationChanged, superseded, cessationOfOperation, certificateHold, "
              "privilegeWithdrawn, aACompromise.")
@click.option("--serial", metavar="HEX",
              help="Revoke this certificate of the session (the current one or one kept in "
              "the archive) instead of the current one.")
@yes_option
@json_option
def request_revoke(name: str, reason: str, serial: str | None, yes: bool) -> None:
    """Revocation request (rr, RFC 9483 4.2) for NAME's certificate, signed with its key.

    Revoking the current certificate ends key updates with it: the CA refuses
    them, and `swcmp status` says so; enroll again with `swcmp request initial`.
    It asks for confirmation on a terminal and needs --yes otherwise.
    """
    from swcmp.calife import reason_code

    code = reason_code(reason)
    try:
        number = int(serial.lower().replace(":", "").removeprefix("0x"), 16) \
            if serial is not None else None
    except ValueError:
        raise _refuse(f"--serial {serial!r} is not a hexadecimal number",
                      "give the serial as `swcmp status NAME` shows it") from None
    env = _env()
    live = _live_serial(env, name)
    if live is not None and number in (None, live):
        confirm(env, yes, f"this revokes session {name}'s live certificate (serial "
                f"{format_serial(live)}): charon keeps using it until it expires, but peers "
                "that check revocation refuse it and the CA refuses key updates with it",
                f"swcmp request revoke {name}" + (f" --reason {reason}" if reason !=
                                                   "unspecified" else ""))
    _ca_step(name, "rr", True, lambda life, s: life.revoke(s, serial=number, reason=code))


def _complete_reasons(incomplete: str) -> list[CompletionItem]:
    """The CRL reasons by their RFC 5280 names, for shell completion of --reason."""
    from click.shell_completion import CompletionItem

    from swcmp.cmp.codec import CRL_REASONS

    return [CompletionItem(n) for n in CRL_REASONS if n.lower().startswith(incomplete.lower())]


def _live_serial(env: CliEnv, name: str) -> int | None:
    """The serial of NAME's current certificate, None when there is none (or it is unreadable)."""
    from swcmp.cmp import certs

    try:
        return certs.load_certificate(env.paths.cert_file(name).read_bytes()).serial_number
    except (OSError, SwcmpError):
        return None


@request.command("crl")
@_name_argument()
@_deploy_option
@json_option
def request_crl(name: str, no_deploy: bool) -> None:
    """Fetch the CA's CRL (genm currentCRL) into x509crl/NAME.crl and load it into charon.

    Taken only if it is signed by the issuer of the session's certificate and is
    not older than the cached one. `serve` does this whenever the cached CRL is due.
    """
    _ca_step(name, "crl", no_deploy, lambda life, s: life.refresh_crl(s))


@request.command("template")
@_name_argument()
@json_option
def request_template(name: str) -> None:
    """Ask the CA which key types and subject it wants (genm certReqTemplate, RFC 9483 4.3.3).

    Prints the template and whether the session's subject and key type (that of a new
    key) fit it. swcmp asks this itself before an initial request and before a key
    update that makes a new key, and refuses to send a request the template forbids.
    """
    from swcmp.calife.template import key_of_session
    from swcmp.cmp import template

    env = _env()
    s = env.store.load(name)
    tmpl = _ca_life(env, True).cert_req_template(s)
    key = key_of_session(s)
    problems = template.check(tmpl, key=key, subject=s.entity_dn) if tmpl else []
    fixes = _template_fixes(s, env.paths, tmpl, problems) if tmpl is not None else []
    data = {"session": s.name, "known": tmpl is not None,
            "template": tmpl.to_json() if tmpl is not None else None,
            "key_type": s.key_type, "fits": not problems,
            "problems": [p.message for p in problems], "fixes": fixes}
    env.emit(data, _template_text(s.name, s.key_type, tmpl, problems, fixes))


def _template_fixes(s: Session, paths: Paths, tmpl: CertReqTemplate,
                    problems: list[Problem]) -> list[str]:
    """The commands that make session ``s`` fit the template, one per kind of problem."""
    from swcmp import keystore

    fixes: list[str] = []
    if any(p.what == "key" for p in problems):
        # a key type the session's key store can make (a token makes fewer than files)
        suggested = tmpl.suggested_key_type(keystore.open(s, paths).key_types)
        fixes.append(f"`swcmp session set {s.name} --key-type {suggested}`" if suggested else
                     "none of the key types swcmp can make here is allowed: ask the CA "
                     "operator")
    if any(p.what == "subject" for p in problems):
        fixes.append(f"`swcmp session set {s.name} --entity DN` with the subject above, or "
                     "ask the CA operator")
    return fixes


def _template_text(name: str, key_type: str, tmpl: CertReqTemplate | None,
                   problems: list[Problem], fixes: list[str]) -> str:
    if tmpl is None:
        return (f"certReqTemplate for session {name}: the CA does not know the question "
                "(remembered; requests go on without a template)")
    if not tmpl.offered:
        return f"certReqTemplate for session {name}: the CA has no template (no requirements)"
    subject = (", ".join(r.describe() for r in tmpl.subject) if tmpl.subject
               else "(any)")
    lines = [f"certReqTemplate for session {name}:",
             "  key types   " + (", ".join(k.describe() for k in tmpl.key_spec) or "(any)"),
             f"  subject     {subject}"]
    if tmpl.extensions:
        lines.append("  extensions  " + ", ".join(tmpl.extensions))
    if tmpl.other_fields:
        lines.append("  also        " + ", ".join(tmpl.other_fields))
    for item in tmpl.unreadable:
        lines.append(f"  unreadable  {item} (not checked)")
    if problems:
        lines += [f"  session     does not fit: {p.message}" for p in problems]
        lines += [f"  fix         {f}" for f in fixes]
    else:
        lines.append(f"  session     fits (subject, and key type {key_type} for a new key)")
    return "\n".join(lines)


__all__ = ["request_cacerts", "request_crl", "request_revoke", "request_rootca",
           "request_template"]
