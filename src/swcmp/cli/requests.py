"""``swcmp request``: initial, certificate and key update requests, now."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from swcmp.cli.root import (
    CliEnv,
    _env,
    _name_argument,
    _refuse,
    cli,
    confirm,
    json_option,
    yes_option,
)

if TYPE_CHECKING:
    from swcmp.deploy import Charon
    from swcmp.enroll import Outcome
    from swcmp.service import RenewalService
    from swcmp.session import Session

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# --- requests --------------------------------------------------------------------------


@cli.group()
def request() -> None:
    """Send a CMP request now: initial (IR), certificate (CR), keyupdate (KUR)."""


def _deploy_option(f: F) -> F:
    return click.option(
        "--no-deploy",
        is_flag=True,
        help="Only write the files to the swanctl directory; do not load them into charon.",
    )(f)


def _trace_option(f: F) -> F:
    """``--trace DIR``: every request and answer of the command as DER files (see
    :mod:`swcmp.cmp.trace`)."""
    import functools
    from pathlib import Path

    @functools.wraps(f)
    def traced(*args: Any, trace: Path | None = None, **kwargs: Any) -> Any:
        from swcmp.cmp.trace import tracing

        with tracing(trace):
            return f(*args, **kwargs)

    return click.option(
        "--trace", metavar="DIR", default=None,
        type=click.Path(file_okay=False, path_type=Path),
        help="Write every CMP request and answer to DIR as DER files with a timestamp, for "
        "the CA's vendor (the MAC secret is not in them).",
    )(traced)  # type: ignore[return-value]


def _charon(env: CliEnv, no_deploy: bool) -> Charon | None:
    """The charon port new pairs, CA certificates and CRLs go to: None with --no-deploy or
    --vici none.

    For each session the port follows its swanctl.conf (pinned mode when a connection's
    ``local.certs`` names the session's certificate file, identity mode otherwise).
    """
    if no_deploy or not env.charon:
        return None
    from swcmp.strongswan import ViciCharon

    return ViciCharon(env.vici, env.paths)


def _service(env: CliEnv, no_deploy: bool) -> RenewalService:
    from swcmp.service import HostConfig, RenewalService

    return RenewalService(
        env.paths,
        charon=_charon(env, no_deploy),
        host=HostConfig.load(env.paths),
        no_deploy=no_deploy and env.charon,
    )


def after_request(env: CliEnv, s: Session | None = None, outcome: Outcome | None = None,
                  *, no_deploy: bool = False) -> None:
    """What a request run by hand owes the rest of the host, like a renewal by the service:
    the post-renew hooks for a new certificate (``outcome``), and a fresh metrics file.

    Neither can fail the request: problems are logged.
    """
    from swcmp.errors import SwcmpError

    try:
        service = _service(env, no_deploy)
        if s is not None and outcome is not None:
            service.run_hooks(s, outcome)
        service.refresh_metrics()
    except SwcmpError as e:
        log.warning("after the request: %s", e)


def _confirm_replacing_a_valid_certificate(env: CliEnv, name: str, yes: bool) -> None:
    from datetime import UTC, datetime

    from swcmp.cli.render import format_serial
    from swcmp.cmp import certs
    from swcmp.errors import SwcmpError

    try:
        current = certs.load_certificate(env.paths.cert_file(name).read_bytes())
    except (OSError, SwcmpError):
        return
    if current.not_valid_after_utc <= datetime.now(UTC):
        return
    confirm(env, yes, f"session {name} has a valid certificate (serial "
            f"{format_serial(current.serial_number)}, until "
            f"{current.not_valid_after_utc:%Y-%m-%dT%H:%MZ}); an initial request replaces it "
            "(and a CA often accepts a MAC reference only once); `swcmp request keyupdate "
            f"{name}` renews it instead", f"swcmp request initial {name}")


def _refuse_changed_names(env: CliEnv, s: Session) -> None:
    """A KUR copies the names of the certificate it updates: refuse when the session's differ."""
    from swcmp.checks import names_changed
    from swcmp.cmp import certs
    from swcmp.errors import CertificateError

    try:
        current = certs.load_certificate(env.paths.cert_file(s.name).read_bytes())
    except (OSError, CertificateError):
        return  # the key update itself says what is missing
    changed = names_changed(s, current)
    if changed:
        raise _refuse(
            f"session {s.name} was changed since its certificate was issued: {changed}; a key "
            "update would keep the certificate's names",
            f"run `swcmp request certificate {s.name}` (a CR carries the new names)",
        )


def _outcome_text(outcome: Outcome) -> str:
    lines = [f"{outcome.action} for session {outcome.session}: {outcome.message}"]
    rows = [
        ("certificate", str(outcome.cert_path or "-")),
        ("key", str(outcome.key_path or "-")),
        ("CA certificates", ", ".join(str(p) for p in outcome.ca_paths) or "-"),
        ("charon", outcome.charon or "-"),
    ]
    lines += [f"  {k:<15}  {v}" for k, v in rows]
    return "\n".join(lines)


@request.command("initial")
@_name_argument()
@_deploy_option
@yes_option
@_trace_option
@json_option
def request_initial(name: str, no_deploy: bool, yes: bool) -> None:
    """Initial request (IR) for NAME, authenticated per its ir_auth (mac or signature).

    The session's key is used, or generated per key_type when it does not exist
    yet. The certificate goes to x509/NAME.crt, the CA certificates to x509ca/,
    the pair is loaded into charon, and the session's authentication certificate
    becomes this new certificate (so enable-auto-update can pass next). Over a
    certificate that is still valid it asks for confirmation on a terminal and
    needs --yes otherwise (a CA often accepts a MAC reference only once).
    """
    from swcmp import enroll

    env = _env()
    s = env.store.load(name)
    _confirm_replacing_a_valid_certificate(env, name, yes)
    try:
        outcome = enroll.request_initial(
            s, env.paths, store=env.store, charon=_charon(env, no_deploy)
        )
    except Exception:
        after_request(env, no_deploy=no_deploy)
        raise
    after_request(env, s, outcome, no_deploy=no_deploy)
    env.emit(outcome.to_json(), _outcome_text(outcome))


@request.command("certificate")
@_name_argument()
@click.option("--pkcs10", is_flag=True,
              help="Send the request as a PKCS#10 CSR (p10cr) instead of a CRMF CR, for "
              "CAs or RAs that only take CSRs.")
@_deploy_option
@_trace_option
@json_option
def request_certificate(name: str, pkcs10: bool, no_deploy: bool) -> None:
    """Certificate request (CR) for NAME, signed with a certificate this CA issued.

    The signing certificate is auth_cert/auth_key, by default the session's own
    current certificate and key.
    """
    from swcmp import enroll

    env = _env()
    s = env.store.load(name)
    try:
        outcome = enroll.request_certificate(
            s, env.paths, store=env.store, charon=_charon(env, no_deploy), pkcs10=pkcs10
        )
    except Exception:
        after_request(env, no_deploy=no_deploy)
        raise
    after_request(env, s, outcome, no_deploy=no_deploy)
    env.emit(outcome.to_json(), _outcome_text(outcome))


@request.command("keyupdate")
@_name_argument()
@click.option(
    "--regenerate/--no-regenerate",
    default=None,
    help="Certify a fresh key (kept aside until the new certificate is verified) or the "
    "current one. Default: the session's regenerate setting.",
)
@_deploy_option
@_trace_option
@json_option
def request_keyupdate(name: str, regenerate: bool | None, no_deploy: bool) -> None:
    """Key update request (KUR) for NAME, signed with its current, unexpired certificate.

    Runs the same staged, crash-safe renewal as auto-update: the live key and
    certificate stay until the new pair is issued, verified and confirmed. An
    interrupted earlier renewal is finished instead of starting a new one.
    """
    env = _env()
    s = env.store.load(name)
    _refuse_changed_names(env, s)
    service = _service(env, no_deploy)
    try:  # renew_now runs the post-renew hooks itself
        outcome = service.renew_now(s, regenerate=regenerate, log_failure=False)
    finally:
        after_request(env, no_deploy=no_deploy)
    env.emit(outcome.to_json(), _outcome_text(outcome))
