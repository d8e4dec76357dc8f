"""``swcmp renew``, ``swcmp serve`` and ``swcmp hook``: renewals, one pass or as a service."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from swcmp.cli.requests import _charon, _deploy_option
from swcmp.cli.root import SESSION_NAME, _env, _refuse, _setup_logging, cli, json_option

if TYPE_CHECKING:
    from swcmp.service import SessionReport

log = logging.getLogger(__name__)

# --- renewal: one pass, the service, the charon hook -------------------------------------


def _report_text(report: SessionReport) -> str:
    return f"{report.session}: {report.result}: {report.message}"


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
@click.option("--dry-run", is_flag=True, help="Say what would be renewed; change nothing.")
@_deploy_option
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
