"""``swcmp request``: initial, certificate and key update requests, now."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from swcmp.cli.root import CliEnv, _env, _name_argument, cli, json_option

if TYPE_CHECKING:
    from swcmp.deploy import Charon
    from swcmp.enroll import Outcome

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
@json_option
def request_initial(name: str, no_deploy: bool) -> None:
    """Initial request (IR) for NAME, authenticated per its ir_auth (mac or signature).

    The session's key is used, or generated per key_type when it does not exist
    yet. The certificate goes to x509/NAME.crt, the CA certificates to x509ca/,
    the pair is loaded into charon, and the session's authentication certificate
    becomes this new certificate (so enable-auto-update can pass next).
    """
    from swcmp import enroll

    env = _env()
    s = env.store.load(name)
    outcome = enroll.request_initial(
        s, env.paths, store=env.store, charon=_charon(env, no_deploy)
    )
    env.emit(outcome.to_json(), _outcome_text(outcome))


@request.command("certificate")
@_name_argument()
@click.option("--pkcs10", is_flag=True,
              help="Send the request as a PKCS#10 CSR (p10cr) instead of a CRMF CR, for "
              "CAs or RAs that only take CSRs.")
@_deploy_option
@json_option
def request_certificate(name: str, pkcs10: bool, no_deploy: bool) -> None:
    """Certificate request (CR) for NAME, signed with a certificate this CA issued.

    The signing certificate is auth_cert/auth_key, by default the session's own
    current certificate and key.
    """
    from swcmp import enroll

    env = _env()
    s = env.store.load(name)
    outcome = enroll.request_certificate(
        s, env.paths, store=env.store, charon=_charon(env, no_deploy), pkcs10=pkcs10
    )
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
@json_option
def request_keyupdate(name: str, regenerate: bool | None, no_deploy: bool) -> None:
    """Key update request (KUR) for NAME, signed with its current, unexpired certificate.

    Runs the same staged, crash-safe renewal as auto-update: the live key and
    certificate stay until the new pair is issued, verified and confirmed. An
    interrupted earlier renewal is finished instead of starting a new one.
    """
    from swcmp.service import HostConfig, RenewalService

    env = _env()
    s = env.store.load(name)
    service = RenewalService(
        env.paths,
        charon=_charon(env, no_deploy),
        host=HostConfig.load(env.paths),
        no_deploy=no_deploy and env.charon,
    )
    outcome = service.renew_now(s, regenerate=regenerate, log_failure=False)
    env.emit(outcome.to_json(), _outcome_text(outcome))
