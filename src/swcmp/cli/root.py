"""The ``swcmp`` command line: thin click commands that parse, call the core, render.

Exit codes (also in ``docs/cli.md``):

* 0: success.
* 1: a check or request failed, or swcmp refused a value, a file or a session
  (bad DN, bad URL, missing file, wrong key for a certificate, broken session
  file, CA error...). One place, :meth:`_RootGroup.invoke`, turns every
  :class:`~swcmp.errors.SwcmpError` into ``error: MESSAGE`` and ``hint: HINT`` on
  stderr, or ``{"error": ..., "hint": ...}`` on stdout with ``--json``; the
  traceback is shown only with ``-v``.
* 2: the command line itself is wrong: unknown command or option, missing
  argument, a value outside the listed choices, or an invalid session name such
  as ``../x`` (session names are checked while the command line is parsed, before
  anything is read or written).

Start-up time: before a command runs only click, :mod:`swcmp.errors` and
:mod:`swcmp.cli.render` are imported. The session modules (and with them
``cryptography``) are imported by commands that read sessions; the CMP client
(pyasn1, http.client) only by ``swcmp request``; vici only where charon is asked.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from swcmp import __version__
from swcmp.cli import render
from swcmp.cmp.text import safe, safe_lines
from swcmp.errors import ConfigError, SwcmpError

if TYPE_CHECKING:
    from swcmp.paths import Paths
    from swcmp.sessionfile import SessionStore

__all__ = ["cli", "json_option"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_VICI_URI = "unix:///var/run/charon.vici"



# --- the state shared by all commands --------------------------------------------------


@dataclass
class CliEnv:
    """Global options, resolved lazily so that help and completion stay cheap.

    Attributes:
        config_dir: ``--config-dir`` (None: environment, then default).
        state_dir: ``--state-dir``.
        swanctl_dir: ``--swanctl-dir``.
        vici: charon's VICI URI.
        json: print JSON instead of text.
        verbose: ``-v`` count.
    """

    @cached_property
    def cwd(self) -> Path:
        """The directory relative paths on the command line are taken from."""
        try:
            return Path.cwd()
        except OSError as e:
            raise ConfigError(f"cannot determine the current directory: {e.strerror}").with_hint(
                "change to an existing directory, or give absolute paths"
            ) from None

    config_dir: Path | None = None
    state_dir: Path | None = None
    swanctl_dir: Path | None = None
    vici: str = DEFAULT_VICI_URI
    json: bool = False
    verbose: int = 0
    #: the session the command is about, once its name is parsed
    session_name: str | None = None

    @cached_property
    def paths(self) -> Paths:
        """The directories: option, else environment variable, else default."""
        from swcmp.paths import Paths

        return Paths.from_env(
            config_dir=self.config_dir, state_dir=self.state_dir, swanctl_dir=self.swanctl_dir
        )

    @cached_property
    def store(self) -> SessionStore:
        """The session files under the configuration directory."""
        from swcmp.sessionfile import SessionStore

        return SessionStore(self.paths.config_dir)

    @property
    def charon(self) -> bool:
        """Whether there is a charon to talk to (``--vici none``: files only, no check)."""
        return self.vici.strip().lower() != "none"

    def emit(self, data: object, text: str) -> None:
        """Print ``data`` as JSON with ``--json``, else ``text``."""
        # Text may hold what a CA sent (status text, names): no control characters
        # reach the terminal, whichever command printed it.
        click.echo(render.dump_json(data) if self.json else render.human(safe_lines(text)))


def _env() -> CliEnv:
    return click.get_current_context().ensure_object(CliEnv)


def _now() -> datetime:
    return datetime.now(UTC)


def _message(e: BaseException) -> str:
    # SwcmpError.__str__ appends the hint; the CLI prints the hint on its own line.
    return Exception.__str__(e)


# --- logging ---------------------------------------------------------------------------


def stderr_is_journal() -> bool:
    """Whether stderr is the systemd journal: ``JOURNAL_STREAM`` names its device and inode."""
    import sys

    wanted = os.environ.get("JOURNAL_STREAM", "")
    if not wanted:
        return False
    try:
        info = os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return wanted == f"{info.st_dev}:{info.st_ino}"


def syslog_prefix(level: int) -> str:
    """``<N>``, the syslog priority of a log level, when stderr is the journal; else ``""``.

    The journal reads it from the start of each line (sd-daemon(3)), so
    ``journalctl -p err`` finds failures.
    """
    if not stderr_is_journal():
        return ""
    priority = (2 if level >= logging.CRITICAL else 3 if level >= logging.ERROR else
                4 if level >= logging.WARNING else 6 if level >= logging.INFO else 7)
    return f"<{priority}>"


class _StderrHandler(logging.Handler):
    """Writes log records to whatever ``sys.stderr`` is at the time (click's runner swaps it).

    A record logged with ``extra={"in_outcome": True}`` says what the command also
    returns as its result, which a one-shot command prints: it is left out there (each
    message once), unless ``-v`` asks for the log or the command is ``serve``, whose
    log is its only voice (:attr:`show_outcomes`).
    """

    show_outcomes = False

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "in_outcome", False) and not self.show_outcomes:
            return
        try:
            prefix = syslog_prefix(record.levelno)
            text = render.human(safe_lines(self.format(record)))
            if prefix:
                text = "\n".join(prefix + line for line in text.splitlines())
            click.echo(text, err=True)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


class _TtyProgress:
    """One line on a terminal's stderr per exchange with the CA: what, where, how long.

    The line is rewritten every second while the CA thinks and ends with the time
    the answer took (or that it did not come).
    """

    def __init__(self, what: str, url: str) -> None:
        import threading
        import time

        self._time = time.monotonic
        self._label = f"swcmp: {what} to {safe(url)}"
        self._start = self._time()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def _line(self, text: str, end: str = "") -> None:
        click.echo(f"\r\033[K{self._label}: {text}", err=True, nl=False)
        if end:
            click.echo(end, err=True, nl=False)

    def _tick(self) -> None:
        while not self._done.wait(1.0):
            self._line(f"waiting for the answer, {self._time() - self._start:.0f} s")

    def __enter__(self) -> None:
        self._line("sending")
        self._thread.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: object) -> None:
        self._done.set()
        self._thread.join()
        took = self._time() - self._start
        self._line(f"answered in {took:.1f} s" if et is None else
                   f"no usable answer after {took:.1f} s", "\n")


def _stderr_is_tty() -> bool:
    import sys

    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _setup_progress(json_output: bool) -> None:
    """A progress line per CA exchange when a person watches stderr (not with --json)."""
    from swcmp.cmp import progress

    progress.install(_TtyProgress if _stderr_is_tty() and not json_output else None)


def _setup_logging(verbose: int) -> None:
    logger = logging.getLogger("swcmp")  # every swcmp logger below it
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("swcmp: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(
        logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    )
    for h in logger.handlers:
        if isinstance(h, _StderrHandler):
            h.show_outcomes = verbose > 0


# --- parameter types -------------------------------------------------------------------


def _sessions_dir_for_completion(ctx: click.Context) -> Path:
    root = ctx.find_root().params
    given = root.get("config_dir")
    base = given or os.environ.get("SWCMP_CONFIG_DIR") or "/etc/swcmp"
    return Path(base) / "sessions"


if TYPE_CHECKING:
    _TextParamType = click.ParamType[str]
else:  # click < 8.2 has no generic ParamType
    _TextParamType = click.ParamType


class SessionNameType(_TextParamType):
    """A session name, checked while the command line is parsed (exit 2 when invalid)."""

    name = "name"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """Return the valid name or fail as a usage error naming the rule."""
        from swcmp.names import validate_session_name

        try:
            name = str(validate_session_name(str(value)))
        except ConfigError as e:
            self.fail(f"{_message(e)}: {e.hint}" if e.hint else _message(e), param, ctx)
        env = ctx.find_object(CliEnv) if ctx is not None else None
        if env is not None:
            env.session_name = name  # for the hint of an error (swcmp session set gw1 ...)
        return name

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[click.shell_completion.CompletionItem]:
        """Complete from the session files (without loading them)."""
        from click.shell_completion import CompletionItem

        try:
            stems = sorted(p.stem for p in _sessions_dir_for_completion(ctx).glob("*.toml"))
        except OSError:
            return []
        return [
            CompletionItem(s) for s in stems if s.startswith(incomplete) and not s.startswith(".")
        ]


SESSION_NAME = SessionNameType()


# --- the root group --------------------------------------------------------------------


def _fail(ctx: click.Context, error: SwcmpError) -> NoReturn:
    """The one place where an expected error becomes output and exit code 1."""
    from swcmp.session import hint_for

    env = ctx.find_object(CliEnv) or CliEnv()
    message = safe(_message(error))
    hint = safe(hint_for(error, env.session_name or "NAME"))
    if not env.json:
        message, hint = render.human(message), render.human(hint)
    if env.verbose:
        click.echo(safe_lines("".join(traceback.format_exception(error)).rstrip()), err=True)
    if env.json:
        click.echo(render.dump_json(render.error_json(message, hint, render.error_code(error))))
    else:
        prefix = syslog_prefix(logging.ERROR)
        click.echo(f"{prefix}error: {message}", err=True)
        if hint:
            click.echo(f"{prefix}hint: {hint}", err=True)
    ctx.exit(1)


#: Exit code of a command interrupted by SIGINT (Ctrl-C): 128 + the signal number.
EXIT_INTERRUPTED = 130
_ARGV = "swcmp.argv"


def _wants_json(ctx: click.Context) -> bool:
    env = ctx.find_object(CliEnv)
    if env is not None and env.json:
        return True
    args = ctx.find_root().meta.get(_ARGV, [])
    args = args[: args.index("--")] if "--" in args else args
    return "--json" in args or os.environ.get("SWCMP_JSON", "").strip().lower() in (
        "1", "true", "t", "yes", "y", "on")


def _usage_json(ctx: click.Context, e: click.UsageError) -> NoReturn:
    usage = e.ctx.command_path if e.ctx is not None else "swcmp"
    click.echo(render.dump_json(render.error_json(e.format_message(), f"see `{usage} --help`",
                                                  "usage")))
    ctx.exit(e.exit_code)


_TESTCA_MODULE = "swcmp.testca.cli"
_TESTCA_HELP = "The embedded CMP test CA (for demos and tests)."


def _testca_available() -> bool:
    # A file test, not an import: listing commands must not import the test CA.
    return (Path(__file__).parent.parent / "testca" / "cli.py").is_file()


def _load_testca() -> click.Command | None:
    import importlib

    try:
        module = importlib.import_module(_TESTCA_MODULE)
    except ModuleNotFoundError as e:
        if e.name and (e.name == _TESTCA_MODULE or _TESTCA_MODULE.startswith(e.name + ".")):
            return None
        raise
    for attr in ("testca", "cli", "group", "main"):
        command = getattr(module, attr, None)
        if isinstance(command, click.Command):
            return command
    return None


class _RootGroup(click.Group):
    """``swcmp``: catches swcmp errors in one place and mounts ``testca`` lazily."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse the global options; a bad one is a JSON error too when JSON was asked for."""
        ctx.meta[_ARGV] = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            if not _wants_json(ctx):
                raise
            _usage_json(ctx, e)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; render expected errors instead of a traceback."""
        try:
            return super().invoke(ctx)
        except SwcmpError as e:
            _fail(ctx, e)
        except click.UsageError as e:
            if not _wants_json(ctx):
                raise
            # Machines asked for JSON: give them JSON for a bad command line too.
            _usage_json(ctx, e)
        except KeyboardInterrupt:
            # Ctrl-C is no refusal: 130 like a shell, and what was interrupted is safe
            # (renewals are journaled; the next run finishes them).
            if _wants_json(ctx):
                click.echo(render.dump_json(render.error_json(
                    "interrupted", "run the command again to finish", "interrupted")))
            else:
                click.echo(f"\n{syslog_prefix(logging.ERROR)}error: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The built-in commands, plus ``testca`` when the test CA is installed."""
        names = list(super().list_commands(ctx))
        if "testca" not in names and _testca_available():
            names.append("testca")
        return names

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Look a command up; ``testca`` is imported only when it is used."""
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name == "testca" and _testca_available():
            command = _load_testca()
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands without importing the test CA."""
        rows = [(name, cmd.get_short_help_str(72)) for name, cmd in sorted(self.commands.items())]
        if "testca" not in self.commands and _testca_available():
            rows.append(("testca", _TESTCA_HELP))
            rows.sort()
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=_RootGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=(
        "Exit codes: 0 success; 1 a check or request failed or a value was refused; "
        "2 usage error; 130 interrupted (SIGINT). Shell completion: see docs/cli.md "
        '(e.g. eval "$(_SWCMP_COMPLETE=bash_source swcmp)").'
    ),
)
@click.option(
    "--config-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Session settings directory [env SWCMP_CONFIG_DIR; default /etc/swcmp].",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="State directory: statistics, locks, transactions "
    "[env SWCMP_STATE_DIR; default /var/lib/swcmp].",
)
@click.option(
    "--swanctl-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="strongSwan credential directory with private/, x509/, x509ca/ "
    "[env SWCMP_SWANCTL_DIR; default /etc/swanctl].",
)
@click.option(
    "--vici",
    metavar="URI",
    envvar="SWCMP_VICI",
    default=DEFAULT_VICI_URI,
    show_default=True,
    help="charon's VICI socket, or 'none' on hosts without charon (no loading into charon, "
    "no strongswan check) [env SWCMP_VICI].",
)
@click.option(
    "--json",
    "json_",
    is_flag=True,
    envvar="SWCMP_JSON",
    help="Print JSON on stdout (shapes in docs/cli.md); errors too [env SWCMP_JSON].",
)
@click.option(
    "-v",
    "--verbose",
    count=True,
    envvar="SWCMP_VERBOSE",
    help="Log to stderr: -v progress, -vv debug; also show tracebacks of errors.",
)
@click.option(
    "--local-time",
    is_flag=True,
    envvar="SWCMP_LOCAL_TIME",
    help="Show times in the local time zone (TZ) instead of UTC [env SWCMP_LOCAL_TIME].",
)
@click.version_option(
    __version__, "-V", "--version", prog_name="swcmp", message="%(prog)s %(version)s"
)
@click.pass_context
def cli(
    ctx: click.Context,
    config_dir: Path | None,
    state_dir: Path | None,
    swanctl_dir: Path | None,
    vici: str,
    json_: bool,
    verbose: int,
    local_time: bool,
) -> None:
    """Renew strongSwan gateway certificates over CMPv2 and hot-load them into charon.

    A CMP session names one certificate to keep valid: who it is for (entity),
    which CA issues it and how to authenticate to that CA. Create one with
    `swcmp session create`, complete it with `swcmp session set`, prove it with
    `swcmp session check`, get the first certificate with `swcmp request initial`
    and turn on renewal with `swcmp session enable-auto-update`.
    """
    ctx.obj = CliEnv(
        config_dir=config_dir,
        state_dir=state_dir,
        swanctl_dir=swanctl_dir,
        vici=vici,
        json=json_,
        verbose=verbose,
    )
    _setup_logging(verbose)
    _setup_progress(json_)
    render.LOCAL_TIME = local_time


def json_option(f: F) -> F:
    """``--json`` on a command, the same as the global ``swcmp --json``."""

    def turn_on(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            ctx.ensure_object(CliEnv).json = True
            _setup_progress(True)

    return click.option(
        "--json",
        "json_",
        is_flag=True,
        expose_value=False,
        callback=turn_on,
        help="Print JSON on stdout (same as `swcmp --json`).",
    )(f)


def _name_argument(*, required: bool = True) -> Callable[[F], F]:
    return click.argument("name", type=SESSION_NAME, required=required,
                          metavar="NAME" if required else "[NAME]")


def _refuse(message: str, hint: str) -> ConfigError:
    return ConfigError(message).with_hint(hint)


def yes_option(f: F) -> F:
    """``--yes``: do what would otherwise ask for confirmation (needed without a TTY)."""
    return click.option("-y", "--yes", is_flag=True,
                        help="Do not ask for confirmation (required when stdin is not a "
                        "terminal).")(f)


def _stdin_is_tty() -> bool:
    import sys

    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def confirm(env: CliEnv, yes: bool, what: str, command: str) -> None:
    """Ask before ``what`` (a dangerous step): on a terminal a y/N question, else ``--yes``.

    Raises:
        ConfigError: not confirmed (the answer was no, or no terminal and no ``--yes``).
    """
    if yes:
        return
    if _stdin_is_tty() and not env.json:
        if click.confirm(f"{what}. Continue?", default=False, err=True):
            return
        error = _refuse("not confirmed; nothing was changed", f"run `{command} --yes` to skip "
                        "the question")
    else:
        error = _refuse(f"{what}; this needs confirmation and stdin is not a terminal",
                        f"run `{command} --yes` if that is what you want")
    error.json_code = "not_confirmed"  # type: ignore[attr-defined]
    raise error
