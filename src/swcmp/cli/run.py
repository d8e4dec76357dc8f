"""``swcmp renew``, ``swcmp serve`` and ``swcmp hook``: renewals, one pass or as a service."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from swcmp.cli.requests import _charon, _deploy_option, _trace_option
from swcmp.cli.root import (
    SESSION_NAME,
    CliEnv,
    _env,
    _message,
    _refuse,
    _setup_logging,
    cli,
    json_option,
)

if TYPE_CHECKING:
    from swcmp.service import SessionReport

log = logging.getLogger(__name__)

# --- renewal: one pass, the service, the charon hook -------------------------------------


def _report_text(report: SessionReport) -> str:
    text = f"{report.session}: {report.result}: {report.message}"
    if report.outcome is not None and report.outcome.charon:
        # what charon did with the new pair (or why it was not updated): said here only
        text += f"; {report.outcome.charon}"
    return text


def _probe(env: CliEnv, report: SessionReport, named: bool) -> SessionReport:
    """``renew --dry-run``: ask the session's CA a question the way a renewal would.

    A genm caCerts signed with the session's current certificate and key, to its
    server URL, its answer verified like a renewal's: it proves the URL, the signing
    credentials and the trust anchors, without a certificate being issued. Sessions
    that would not be renewed anyway (no certificate, standby, auto-update off and
    not named) are left alone.
    """
    import dataclasses

    from swcmp.enroll import _record_stats, make_client, signature_protection
    from swcmp.errors import CMPErrorResponse, SwcmpError
    from swcmp.service import load_cert
    from swcmp.session import hint_for

    if report.result not in ("dry-run", "skipped"):
        return report
    try:
        s = env.store.load(report.session)
    except SwcmpError:
        return report
    cert = load_cert(env.paths, s.name)
    if cert is None or not (s.auto_update or named):
        return report
    from swcmp.cli.render import format_serial

    signer = f"the current certificate (serial {format_serial(cert.serial_number)})"
    client = None
    try:
        client = make_client(s, paths=env.paths)
        client.ca_certs(protection=signature_protection(s, env.paths))
    except CMPErrorResponse as e:
        if e.protected:
            # The CA answered, and its protection verified: URL and trust anchors work;
            # whether it takes our signature for a KUR is not proven.
            note = (f"CA check: the CA at {s.server_url} answered a genm signed with {signer} "
                    f"with a verified error ({_message(e)}): the URL and the trust anchors "
                    "work, the signature was not accepted for this question")
            return dataclasses.replace(report, message=f"{report.message}; {note}")
        return dataclasses.replace(report, result="failed",
                                   message=f"{report.message}; CA check failed: {_message(e)}")
    except SwcmpError as e:
        hint = hint_for(e, s.name)
        return dataclasses.replace(report, result="failed", message=(
            f"{report.message}; CA check failed: {_message(e)}" + (f" ({hint})" if hint
                                                                    else "")))
    finally:
        if client is not None:
            _record_stats(env.paths, s.name, client)
    note = (f"CA check passed: the CA at {s.server_url} answered a genm (caCerts) signed with "
            f"{signer}, and its answer verified with the trust anchors: the URL, the "
            "signing credentials and the trust anchors work (no certificate was requested)")
    return dataclasses.replace(report, message=f"{report.message}; {note}")


@cli.command("renew")
@click.argument("names", nargs=-1, type=SESSION_NAME, metavar="[NAME]...")
@click.option(
    "--due/--all",
    "due_only",
    default=True,
    help="Renew only what is due (default; what cron and timers run), or every named "
    "session with a valid certificate.",
)
@click.option("--force", is_flag=True, help="Renew now even when not due.")
@click.option("--dry-run", is_flag=True,
              help="Say what would be renewed and test each session's CA for real: a genm "
              "(caCerts) signed with the current certificate, its answer verified with the "
              "trust anchors; nothing is stored or renewed.")
@_deploy_option
@_trace_option
@json_option
def renew(
    names: tuple[str, ...], due_only: bool, force: bool, dry_run: bool, no_deploy: bool
) -> None:
    """One renewal pass over NAMEs, or over every auto-update session, then exit.

    For cron and systemd timers (`swcmp renew --due`). A standby node (HA role
    BACKUP...) requests nothing and reports `standby`. Exit code 1 if any
    renewal failed.
    """
    from swcmp.service import HostConfig, RenewalService

    env = _env()
    service = RenewalService(
        env.paths,
        charon=_charon(env, no_deploy),
        host=HostConfig.load(env.paths),
        no_deploy=no_deploy and env.charon,
    )
    reports = service.run_pass(names, due_only=due_only, force=force, dry_run=dry_run)
    if dry_run:
        reports = [_probe(env, r, bool(names)) for r in reports]
    env.emit(
        {"results": [r.to_json() for r in reports]},
        "\n".join(_report_text(r) for r in reports) or "no sessions",
    )
    if any(r.result == "failed" for r in reports):
        click.get_current_context().exit(1)


@cli.command("serve")
@_deploy_option
@click.option("-v", "--verbose", "more", count=True,
              help="Also log debug details (the service logs its progress by default).")
@click.option("--pid-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the process id to FILE while serving (for notify scripts that wake "
              "the service with SIGHUP, e.g. contrib/keepalived-notify.sh -p FILE).")
def serve(no_deploy: bool, more: int, pid_file: Path | None) -> None:
    """Run the renewal service: renew each session when due, until SIGTERM.

    Sleeps until the next session is due; SIGHUP or a changed session file makes
    it look again. Logs each renewal, failure and retry to stderr (the journal
    under systemd); -v adds debug details.
    """
    from swcmp.service import HostConfig, RenewalService, Server

    env = _env()
    # A service's log is its only voice: progress (INFO) is on unless asked for more.
    _setup_logging(max(1, env.verbose) + more)
    service = RenewalService(
        env.paths,
        charon=_charon(env, no_deploy),
        host=HostConfig.load(env.paths),
        no_deploy=no_deploy and env.charon,
    )
    server = Server(service)
    server.install_signals()
    if pid_file is None:
        server.run()
        return
    from swcmp import fsutil

    pid_file = env.cwd / pid_file
    fsutil.atomic_write(pid_file, f"{os.getpid()}\n".encode(), mode=0o644)
    try:
        server.run()
    finally:
        try:
            if pid_file.read_text().strip() == str(os.getpid()):
                pid_file.unlink()
        except OSError:
            pass


@cli.group()
def hook() -> None:
    """Entry points for strongSwan (see contrib/strongswan)."""


@hook.command("charon-start")
@json_option
def hook_charon_start() -> None:
    """Load every session's current key and certificate into a (re)started charon.

    Run from charon's start-scripts. Renewals that were confirmed but not yet
    committed when the node went down are finished first, without asking the CA.
    A pair whose certificate expired or was revoked (by swcmp, or listed in the
    stored CRL of its CA) is not loaded; the output and the log name it.
    """
    from swcmp.start_hook import charon_start

    env = _env()
    if not env.charon:
        raise _refuse("hook charon-start needs charon", "give --vici URI (not 'none')")
    from swcmp.strongswan import ViciCharon

    detail = charon_start(env.paths, ViciCharon(env.vici, env.paths, timeout=10.0))
    env.emit({"loaded": True, "detail": detail}, detail)
