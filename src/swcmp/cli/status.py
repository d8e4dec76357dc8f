"""``swcmp status`` and ``swcmp stats``: what each session is doing and has done."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from swcmp.cli import render
from swcmp.cli.root import (
    SESSION_NAME,
    CliEnv,
    _env,
    _message,
    _name_argument,
    _now,
    _refuse,
    cli,
    json_option,
)
from swcmp.errors import ConfigError, SwcmpError
from swcmp.status import session_status

if TYPE_CHECKING:
    from swcmp.ha import Role

log = logging.getLogger(__name__)

# --- statistics ------------------------------------------------------------------------

_STATS_NAME = "swcmp.stats.name"


class _StatsGroup(click.Group):
    """``swcmp stats [NAME]`` and ``swcmp stats reset [NAME]`` side by side.

    The first word that is not an option and not a subcommand is taken as the
    session name, so ``reset`` always means the subcommand.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Take an optional session name before the usual group parsing."""
        rest = list(args)
        for i, arg in enumerate(rest):
            if arg == "--":
                break
            if arg.startswith("-"):
                continue
            if arg not in self.commands:
                ctx.meta[_STATS_NAME] = rest.pop(i)
            break
        return super().parse_args(ctx, rest)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Show both forms."""
        formatter.write_usage(ctx.command_path, "[OPTIONS] [NAME] | reset [NAME]")


def _stats_names(env: CliEnv, name: str | None) -> list[str]:
    """The sessions to report on: NAME (which must exist), or every session file."""
    from swcmp.names import validate_session_name

    if name is not None:
        if not env.store.exists(name):
            raise _refuse(f"no session named {name}", "`swcmp session list` shows the sessions")
        return [name]
    names = []
    for stem in env.store.names():
        try:
            names.append(str(validate_session_name(stem)))
        except ConfigError:
            continue  # `session list` reports files with invalid names
    return names


@cli.group(cls=_StatsGroup, invoke_without_command=True)
@json_option
@click.pass_context
def stats(ctx: click.Context) -> None:
    """Request statistics of NAME or all sessions; `stats reset` zeroes them.

    Per session: IR, CR, KUR and pollReq messages sent, answers received, and
    failures. `swcmp stats reset [NAME]` sets them back to zero.
    """
    if ctx.invoked_subcommand is not None:
        if _STATS_NAME in ctx.meta:
            raise click.UsageError("give the session name after the subcommand", ctx)
        return
    from swcmp.state import StateStore

    env = _env()
    given = ctx.meta.get(_STATS_NAME)
    name = SESSION_NAME.convert(given, None, ctx) if given is not None else None
    states = StateStore(env.paths)
    per_session = [(n, states.load(n).stats) for n in _stats_names(env, name)]
    env.emit(
        {"sessions": [{"session": n, "stats": st} for n, st in per_session]},
        render.stats_text(per_session),
    )


@stats.command("reset")
@_name_argument(required=False)
@json_option
def stats_reset(name: str | None) -> None:
    """Set the statistics of session NAME (or of all sessions) back to zero."""
    from swcmp.state import StateStore

    env = _env()
    states = StateStore(env.paths)
    names = _stats_names(env, name)
    for n in names:
        states.reset_stats(n)
    env.emit(
        {"reset": names},
        "statistics reset for " + (", ".join(names) if names else "no sessions"),
    )


# --- status ----------------------------------------------------------------------------


@cli.command("status")
@_name_argument(required=False)
@json_option
def status(name: str | None) -> None:
    """State, expiry, next renewal and last result of NAME or all sessions.

    All sessions: one table, the most urgent first (expired, failing, due, ok),
    with days left, next renewal and last result. NAME: every detail of one.
    States: idle, due, in_progress, polling, failed (waiting to retry), standby
    (this node's HA role is not active, or its role source cannot be read),
    needs_ir (no valid certificate: run `swcmp request initial`), disabled
    (auto-update off). Exit code 1 when a session file cannot be read (listed
    under "errors") or a session's renewal journal is damaged (state failed).
    """
    env = _env()
    now = _now()
    role, notes = _status_role(env)
    entries: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    if name is not None:
        entries.append(session_status(env.paths, env.store.load(name), now, role))
    else:
        listing = env.store.list()
        entries = [session_status(env.paths, s, now, role) for s in listing.sessions]
        errors = [
            {"path": e.path, "line": e.line, "error": _message(e), "hint": e.hint or None}
            for e in listing.errors
        ]
    text_entries = entries + [
        {"session": Path(e["path"]).stem, "error": e["error"], "hint": e["hint"]} for e in errors
    ]
    if name is not None:
        text = "\n".join([*notes, render.status_text(text_entries)])
    else:
        text = render.status_table(text_entries, now=now, notes=notes,
                                   width=render.output_width())
    env.emit({"sessions": entries, "errors": errors}, text)
    if errors or any(e.get("journal_damaged") for e in entries):
        # a broken session file or a damaged renewal journal renews nothing: never silent
        click.get_current_context().exit(1)


def _status_role(env: CliEnv) -> tuple[Role | None, list[str]]:
    """This node's HA role for ``status`` (None without a role source) and a line about it."""
    from swcmp.service import HostConfig, host_role

    try:
        host = HostConfig.load(env.paths)
    except SwcmpError as e:
        # renewals refuse to run with broken host settings: say so, do not fail status
        return None, [f"warning: {_message(e)} (renewals stop until it is fixed)"]
    role = host_role(host)
    if not role.configured:
        return None, []
    return role, [f"HA: {role.describe()}"]
