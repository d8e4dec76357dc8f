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
:mod:`swcmp.render` are imported. The session modules (and with them
``cryptography``) are imported by commands that read sessions; the CMP client
(pyasn1, http.client) only by ``swcmp request``; vici only where charon is asked.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from swcmp import __version__, render
from swcmp.choices import IR_AUTH_MODES, KEY_TYPES, MAC_ALGS
from swcmp.cmp.text import safe, safe_lines
from swcmp.errors import ConfigError, SwcmpError

if TYPE_CHECKING:
    from swcmp.checks import CheckResult
    from swcmp.deploy import Deployer
    from swcmp.enroll import Outcome
    from swcmp.ha import Role
    from swcmp.paths import Paths
    from swcmp.service import SessionReport
    from swcmp.session import Session
    from swcmp.sessionfile import SessionStore

__all__ = ["cli", "main"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_VICI_URI = "unix:///var/run/charon.vici"

# Settings that name files which must exist when they are set.
_FILE_FIELDS = ("mac_secret_file", "auth_cert", "auth_key", "trust", "tls_ca_bundle",
                "server_cert", "extra_certs", "tls_client_cert", "tls_client_key",
                "pkcs11_module", "pin_file")
_CERT_FIELDS = ("auth_cert", "trust", "tls_ca_bundle", "server_cert", "extra_certs",
                "tls_client_cert")


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
        click.echo(render.dump_json(data) if self.json else safe_lines(text))


def _env() -> CliEnv:
    return click.get_current_context().ensure_object(CliEnv)


def _now() -> datetime:
    return datetime.now(UTC)


def _message(e: BaseException) -> str:
    # SwcmpError.__str__ appends the hint; the CLI prints the hint on its own line.
    return Exception.__str__(e)


# --- logging ---------------------------------------------------------------------------


class _StderrHandler(logging.Handler):
    """Writes log records to whatever ``sys.stderr`` is at the time (click's runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(safe_lines(self.format(record)), err=True)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def _setup_logging(verbose: int) -> None:
    logger = logging.getLogger("swcmp")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("swcmp: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(
        logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    )


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
            return str(validate_session_name(str(value)))
        except ConfigError as e:
            self.fail(f"{_message(e)}: {e.hint}" if e.hint else _message(e), param, ctx)

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
    name = ctx.params.get("name")
    message = safe(_message(error))
    hint = safe(hint_for(error, name if isinstance(name, str) else "NAME"))
    if env.verbose:
        click.echo(safe_lines("".join(traceback.format_exception(error)).rstrip()), err=True)
    if env.json:
        click.echo(render.dump_json(render.error_json(message, hint)))
    else:
        click.echo(f"error: {message}", err=True)
        if hint:
            click.echo(f"hint: {hint}", err=True)
    ctx.exit(1)


_TESTCA_MODULE = "swcmp.testca.cli"
_TESTCA_HELP = "The embedded CMP test CA (for demos and tests)."


def _testca_available() -> bool:
    # A file test, not an import: listing commands must not import the test CA.
    return (Path(__file__).parent / "testca" / "cli.py").is_file()


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

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; render expected errors instead of a traceback."""
        try:
            return super().invoke(ctx)
        except SwcmpError as e:
            _fail(ctx, e)
        except click.UsageError as e:
            env = ctx.find_object(CliEnv)
            if env is None or not env.json:
                raise
            # Machines asked for JSON: give them JSON for a bad command line too.
            usage = e.ctx.command_path if e.ctx is not None else "swcmp"
            hint = f"see `{usage} --help`"
            click.echo(render.dump_json(render.error_json(e.format_message(), hint)))
            ctx.exit(e.exit_code)

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
        "2 usage error. Shell completion: see docs/cli.md "
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


def json_option(f: F) -> F:
    """``--json`` on a command, the same as the global ``swcmp --json``."""

    def turn_on(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            ctx.ensure_object(CliEnv).json = True

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


# --- session ---------------------------------------------------------------------------


@cli.group()
def session() -> None:
    """Configure CMP sessions: create, set, check, enable auto-update."""


# Option name (the click parameter) -> session field (config.FIELDS).
_OPTION_FIELDS = {
    "entity": "entity",
    "san": "sans",
    "ca_name": "ca_name",
    "server_url": "server_url",
    "ir_auth": "ir_auth",
    "mac_ref": "mac_ref",
    "mac_secret_file": "mac_secret_file",
    "mac_alg": "mac_alg",
    "auth_cert": "auth_cert",
    "auth_key": "auth_key",
    "trust": "trust",
    "key": "key",
    "regenerate": "regenerate",
    "key_type": "key_type",
    "expire_time": "expire_time",
    "connection": "connections",
    "tls_ca_bundle": "tls_ca_bundle",
    "server_cert": "server_cert",
    "extra_certs": "extra_certs",
    "ignore_keyusage": "ignore_keyusage",
    "implicit_confirm": "implicit_confirm",
    "cert_profile": "cert_profile",
    "timeout": "timeout",
    "tls_client_cert": "tls_client_cert",
    "tls_client_key": "tls_client_key",
    "pkcs11_module": "pkcs11_module",
    "pin_file": "pin_file",
}


def setting_options(f: F) -> F:
    """The options of ``session create`` and ``session set``, one per setting."""
    options = [
        click.option(
            "--entity",
            metavar="DN",
            help="Subject DN put in requests; needs a common name. RFC 4514 "
            "(CN=gw1,O=Example,C=DE) or slash form (/C=DE/O=Example/CN=gw1).",
        ),
        click.option(
            "--san",
            metavar="TYPE:VALUE",
            multiple=True,
            help="subjectAltName: DNS:name, IP:address, EMAIL:address or URI:uri. "
            "Repeat for several; the names given replace the stored list.",
        ),
        click.option(
            "--ca-name",
            metavar="DN",
            help="DN of the CA (request recipient; selects the trust anchor). "
            "RDN order must match the CA certificate.",
        ),
        click.option(
            "--server-url",
            metavar="URL",
            help="Where CMP messages are POSTed, http:// or https:// "
            "(e.g. http://ca.example.net:8080/pkix/).",
        ),
        click.option(
            "--ir-auth",
            type=click.Choice(IR_AUTH_MODES),
            help="How an initial request (IR) is authenticated: mac (reference + shared "
            "secret, default) or signature (--auth-cert/--auth-key from another CA).",
        ),
        click.option(
            "--mac-ref",
            metavar="REF",
            help="MAC reference value (senderKID) the CA operator gave out of band.",
        ),
        click.option(
            "--mac-secret-file",
            metavar="FILE",
            help="File holding only the shared MAC secret (mode 0600). "
            "The secret is read when needed and never shown.",
        ),
        click.option(
            "--mac-alg",
            type=click.Choice(MAC_ALGS),
            help="MAC algorithm: hmac-sha256 (default) or hmac-sha1 (legacy CAs only).",
        ),
        click.option(
            "--auth-cert",
            metavar="FILE",
            help="Certificate that signs requests (IR with --ir-auth signature, CR). "
            "Default: the session's own certificate once it has one.",
        ),
        click.option(
            "--auth-key",
            metavar="FILE",
            help="Private key of --auth-cert. Default: the session's key pair.",
        ),
        click.option(
            "--trust",
            metavar="FILE",
            multiple=True,
            help="CA certificate(s) that verify signed responses (PEM or DER). "
            "Repeat for several; the files given replace the stored list.",
        ),
        click.option(
            "--key",
            metavar="NAME|URI",
            help="Key pair name: private/NAME.key under the swanctl directory. An existing "
            "key is used as it is, a missing one is generated at the first request. "
            "`create` defaults it to the session name. Or a PKCS#11 URI "
            "(pkcs11:token=LABEL;object=LABEL) for keys made and kept in a token, with "
            "--pkcs11-module and --pin-file.",
        ),
        click.option(
            "--regenerate/--no-regenerate",
            default=None,
            help="Make a fresh key at each update (kept aside until the new certificate is "
            "verified) instead of re-certifying the same key. Default: no.",
        ),
        click.option(
            "--key-type",
            type=click.Choice(KEY_TYPES),
            help="Type of newly generated keys (default rsa:3072).",
        ),
        click.option(
            "--expire-time",
            metavar="PERCENT|DURATION",
            help="When to renew. A PERCENT (10-100, default 50) is the share of the "
            "validity period that must still REMAIN: 50 renews half-way, 20 when a fifth "
            "is left. Or an absolute DURATION before expiry: 30d, 12h, 1d12h, 90m. "
            "Never before a tenth of the validity period has passed (no renewal loops).",
        ),
        click.option(
            "--connection",
            metavar="CONN",
            multiple=True,
            help="swanctl.conf connection that uses this certificate. Repeat for several; "
            "the names given replace the stored list.",
        ),
        click.option(
            "--tls-ca-bundle",
            metavar="FILE",
            help="CA bundle that verifies an https:// server (default: the system store).",
        ),
        click.option(
            "--server-cert",
            metavar="FILE",
            multiple=True,
            help="Pin the CMP server's signing certificate: answers it signs are trusted "
            "without a chain or extendedKeyUsage (like openssl cmp -srvcert). Repeat for "
            "several; the files given replace the stored list.",
        ),
        click.option(
            "--extra-certs",
            metavar="FILE",
            multiple=True,
            help="Certificates added to the extraCerts of signed requests, after the "
            "signer's chain (e.g. the root, for CAs that want it). Repeat for several.",
        ),
        click.option(
            "--ignore-keyusage/--no-ignore-keyusage",
            default=None,
            help="Accept answers signed by a certificate whose keyUsage lacks "
            "digitalSignature (CAs signing with a keyCertSign-only root). Default: no.",
        ),
        click.option(
            "--implicit-confirm/--no-implicit-confirm",
            default=None,
            help="Ask the CA to grant implicitConfirm (no certConf/pkiConf round trip). "
            "Default: no.",
        ),
        click.option(
            "--cert-profile",
            metavar="NAME",
            help="Certificate profile named in requests (generalInfo certProfile, "
            "RFC 9483 3.1), for CAs that select the profile per request.",
        ),
        click.option(
            "--timeout",
            metavar="SECONDS",
            type=int,
            help="Total time one exchange with the CA may take, from connecting to the "
            "last byte of its answer (1-600, default 60). Polling a CA that answered "
            "'waiting' has its own limit.",
        ),
        click.option(
            "--tls-client-cert",
            metavar="FILE",
            help="TLS client certificate (PEM) for a CA behind mutual TLS (https://); "
            "give --tls-client-key with it.",
        ),
        click.option(
            "--tls-client-key",
            metavar="FILE",
            help="Private key of --tls-client-cert (PEM, unencrypted, mode 0600).",
        ),
        click.option(
            "--pkcs11-module",
            metavar="PATH",
            help="PKCS#11 module of the token that holds a pkcs11: --key (e.g. "
            "/usr/lib/softhsm/libsofthsm2.so, libtpm2_pkcs11.so).",
        ),
        click.option(
            "--pin-file",
            metavar="FILE",
            help="File holding only the token's user PIN (mode 0600). Read when needed, "
            "never shown or logged.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _setting_values(params: Mapping[str, Any]) -> dict[str, object]:
    """The settings given on the command line, by field name (unused options left out)."""
    values: dict[str, object] = {}
    for param, field_name in _OPTION_FIELDS.items():
        value = params.get(param)
        if value is None or (isinstance(value, tuple) and not value):
            continue
        values[field_name] = list(value) if isinstance(value, tuple) else value
    return values


def _refuse(message: str, hint: str) -> ConfigError:
    return ConfigError(message).with_hint(hint)


def _check_given_files(session: Session, changed: Sequence[str], paths: Paths) -> None:
    """Refuse files that are missing, unreadable or not what the setting needs.

    Run before anything is written, so a bad value leaves the session unchanged.
    Also refuses an authentication certificate that does not belong to its key.

    Raises:
        ConfigError: naming the option, the file and what to do.
    """
    from swcmp.cmp import certs, keys
    from swcmp.session import FIELDS, auth_credentials

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
                raise _refuse(
                    f"{option} {path}: the file {why}",
                    "give the path of an existing file (relative paths are taken from "
                    "the current directory)",
                )
            try:
                data = path.read_bytes()
            except OSError as e:
                raise _refuse(
                    f"{option} {path}: cannot read: {e.strerror}",
                    "run swcmp as root or fix the file's permissions",
                ) from None
            if name in _CERT_FIELDS:
                try:
                    certs.load_certificates(data)
                except SwcmpError:
                    raise _refuse(
                        f"{option} {path}: not a PEM or DER X.509 certificate",
                        "give the certificate file itself (PEM with BEGIN CERTIFICATE, or DER)",
                    ) from None
            elif name in ("auth_key", "tls_client_key"):
                try:
                    keys.load_private_key(data)
                except SwcmpError as e:
                    raise _refuse(
                        f"{option} {path}: {_message(e)}",
                        "give the certificate's unencrypted private key (PEM or DER)",
                    ) from None
                mode = path.stat().st_mode & 0o777
                if name == "tls_client_key" and mode & 0o077:
                    raise _refuse(f"{option} {path}: mode {mode:04o} lets others read the key",
                                  f"chmod 600 {path}")
            elif name == "pin_file" and path.stat().st_mode & 0o077:
                raise _refuse(f"{option} {path}: mode {path.stat().st_mode & 0o777:04o} lets "
                              "others read the PIN", f"chmod 600 {path}")
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
        raise _refuse(
            f"the authentication certificate {cert_path} does not belong to the key {key_path}",
            "give the certificate and its own key together: "
            f"swcmp session set {session.name} --auth-cert CERT --auth-key KEY",
        )


def _session_show_text(env: CliEnv, s: Session) -> str:
    from swcmp.session import auth_credentials, session_key_file

    cert, key = auth_credentials(s, env.paths)
    own_cert = env.paths.cert_file(s.name)
    if cert is None and s.auth_cert is None:
        cert_item: tuple[str, bool] | None = (str(own_cert), False)
    else:
        cert_item = (str(cert), cert.exists()) if cert is not None else None
    key_file = session_key_file(s, env.paths)
    return render.session_text(
        s.describe(),
        path=str(env.store.path_for(s.name)),
        auth_cert=cert_item,
        auth_key=(str(key), key.exists()) if key is not None else None,
        key_file=(str(key_file), key_file.exists()) if key_file is not None else None,
    )


def _warn_if_auto_update_breaks(env: CliEnv, s: Session) -> None:
    """After a change to a session with auto-update on, say if its checks now fail."""
    if not s.auto_update:
        return
    from swcmp.checks import failed

    bad = failed(_run_checks(env, s))
    if bad:
        names = ", ".join(r.name for r in bad)
        click.echo(
            f"warning: auto-update is on but these checks now fail: {names} "
            f"(see `swcmp session check {s.name}`)",
            err=True,
        )


@session.command("create")
@_name_argument()
@setting_options
@json_option
def session_create(name: str, **options: Any) -> None:
    """Create session NAME, optionally with settings (the options of `session set`).

    The key pair defaults to NAME (private/NAME.key). Nothing is written when a
    value is refused.
    """
    from swcmp.names import SessionName
    from swcmp.session import Session, set_fields

    env = _env()
    values = _setting_values(options)
    values.setdefault("key", name)
    # Validate everything (relative paths against the current directory) first.
    draft = set_fields(Session(name=SessionName(name)), values, base_dir=env.cwd)
    _check_given_files(draft, list(values), env.paths)
    created = env.store.create(name, {k: getattr(draft, k) for k in values})
    env.emit(
        created.describe(),
        f"created session {name} ({env.store.path_for(name)})\n" + _session_show_text(env, created),
    )


@session.command("set")
@_name_argument()
@setting_options
@json_option
def session_set(name: str, **options: Any) -> None:
    """Change settings of session NAME; the others stay as they are.

    Relative paths are taken from the current directory and stored absolute.
    Every value is checked first: on any error nothing is written.
    """
    from swcmp.session import set_fields

    env = _env()
    values = _setting_values(options)
    if not values:
        raise click.UsageError("nothing to set: give at least one option (see --help)")
    current = env.store.load(name)
    draft = set_fields(current, values, base_dir=env.cwd)
    _check_given_files(draft, list(values), env.paths)
    saved = env.store.update(name, set_values=values, base_dir=env.cwd)
    env.emit(saved.describe(), _session_show_text(env, saved))
    _warn_if_auto_update_breaks(env, saved)


@session.command("unset")
@_name_argument()
@click.argument("fields", nargs=-1, required=True, metavar="FIELD...")
@json_option
def session_unset(name: str, fields: tuple[str, ...]) -> None:
    """Reset settings of session NAME to their defaults (the router's "undo").

    FIELD is a setting as `session show` names it (entity, sans, ca_name,
    mac_ref, trust, ...) or as its option without the dashes (mac-ref, san).
    """
    from swcmp.session import field_name

    env = _env()
    names = [field_name(f) for f in fields]
    if "auto_update" in names:
        raise _refuse(
            "auto_update is switched with its own commands",
            f"run `swcmp session disable-auto-update {name}`",
        )
    saved = env.store.update(name, unset=names)
    env.emit(saved.describe(), _session_show_text(env, saved))
    _warn_if_auto_update_breaks(env, saved)


@session.command("show")
@_name_argument()
@json_option
def session_show(name: str) -> None:
    """Show the settings of session NAME (never the MAC secret).

    DNs are printed in wire order (slash form, most significant RDN first).
    """
    env = _env()
    s = env.store.load(name)
    env.emit(s.describe(), _session_show_text(env, s))


@session.command("list")
@json_option
def session_list() -> None:
    """List the sessions; a broken session file is listed with its error."""
    env = _env()
    listing = env.store.list()
    sessions = [s.describe() for s in listing.sessions]
    errors = [
        {"path": e.path, "line": e.line, "error": _message(e), "hint": e.hint or None}
        for e in listing.errors
    ]
    env.emit({"sessions": sessions, "errors": errors}, render.session_list_text(sessions, errors))


@session.command("delete")
@_name_argument()
@json_option
def session_delete(name: str) -> None:
    """Delete session NAME's settings; its key, certificates and state stay on disk."""
    env = _env()
    path = env.store.path_for(name)
    env.store.delete(name)
    env.emit(
        {"session": name, "deleted": True, "path": str(path)},
        f"deleted session {name} ({path}); its key, certificates and state are left in place",
    )


def _run_checks(env: CliEnv, s: Session) -> list[CheckResult]:
    """The built-in checks, plus "strongswan" (charon uses the certificate) unless --vici none."""
    from swcmp.checks import ExtraCheck, run_checks

    extra: list[ExtraCheck] = []
    if env.charon:
        from swcmp.strongswan import binding_check

        extra.append(binding_check(env.vici))
    return run_checks(s, env.paths, now=_now(), extra_checks=extra)


@session.command("check")
@_name_argument()
@json_option
def session_check(name: str) -> None:
    """Run every check of session NAME: ok, warn or FAIL, what was found, and the fix.

    These are the checks that guard enable-auto-update: a FAIL blocks it, a
    warning (charon not reachable, no connection uses the certificate yet) does
    not. Exit code 1 if any check fails, 0 with warnings alone.
    """
    env = _env()
    results = _run_checks(env, env.store.load(name))
    env.emit(render.check_json(name, results), render.check_text(name, results))
    if not all(r.ok for r in results):
        click.get_current_context().exit(1)


@session.command("enable-auto-update")
@_name_argument()
@json_option
def session_enable(name: str) -> None:
    """Turn on automatic renewal for NAME, unless a check fails.

    Warnings (e.g. charon not running now) do not block it. When a check fails,
    nothing changes: the report of `session check` is printed and the exit code
    is 1.
    """
    env = _env()
    results = _run_checks(env, env.store.load(name))
    ok = all(r.ok for r in results)
    if ok:
        env.store.update(name, set_values={"auto_update": True})
    report = render.check_json(name, results)
    report["auto_update"] = ok
    text = render.check_text(name, results)
    if ok:
        text += f"\nauto-update enabled for session {name}"
    env.emit(report, text)
    if not ok:
        if not env.json:
            click.echo(
                f"error: auto-update not enabled for session {name}: "
                f"{sum(not r.ok for r in results)} check(s) failed",
                err=True,
            )
            click.echo("hint: apply the fixes above, then run this command again", err=True)
        click.get_current_context().exit(1)


@session.command("disable-auto-update")
@_name_argument()
@json_option
def session_disable(name: str) -> None:
    """Turn off automatic renewal for NAME (settings and certificate stay)."""
    env = _env()
    env.store.update(name, set_values={"auto_update": False})
    env.emit({"session": name, "auto_update": False}, f"auto-update disabled for session {name}")


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


def _deployer(env: CliEnv, no_deploy: bool, session: Session | None = None) -> Deployer | None:
    """What loads new pairs into charon: None with --no-deploy or --vici none.

    For one session the deployer follows its swanctl.conf (pinned mode when a
    connection's ``local.certs`` names the session's certificate file, identity
    mode otherwise); for several sessions it is identity mode.
    """
    if no_deploy or not env.charon:
        return None
    from swcmp.service import stale_keys_file
    from swcmp.strongswan import ViciDeployer, choose_deployer

    if session is None:
        return ViciDeployer(env.vici)
    return choose_deployer(
        env.vici,
        env.paths.cert_file(session.name),
        swanctl_conf=env.paths.swanctl_dir / "swanctl.conf",
        swanctl_dir=env.paths.swanctl_dir,
        connections=session.connections,
        stale_file=stale_keys_file(env.paths, session.name),
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
        s, env.paths, store=env.store, deployer=_deployer(env, no_deploy, s)
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
        s, env.paths, store=env.store, deployer=_deployer(env, no_deploy, s), pkcs10=pkcs10
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
        deployer_for=lambda sess: _deployer(env, no_deploy, sess),
        host=HostConfig.load(env.paths),
    )
    outcome = service.renew_now(s, regenerate=regenerate, log_failure=False)
    env.emit(outcome.to_json(), _outcome_text(outcome))


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


def _cert_info(path: Path, now: datetime) -> dict[str, Any] | None:
    from swcmp.cmp import certs
    from swcmp.names import format_dn

    try:
        cert = certs.load_certificate(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as e:
        return {"path": str(path), "error": f"cannot read {path}: {e.strerror}"}
    except SwcmpError as e:
        return {"path": str(path), "error": f"{path}: {_message(e)}"}
    not_after = cert.not_valid_after_utc
    return {
        "path": str(path),
        "subject": format_dn(cert.subject),
        "issuer": format_dn(cert.issuer),
        "serial": f"{cert.serial_number:x}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": not_after.isoformat(),
        "days_left": max((not_after - now).days, 0),
        "expired": now >= not_after,
    }


def _status_entry(env: CliEnv, s: Session, now: datetime, role: Role | None) -> dict[str, Any]:
    from swcmp.cmp import certs
    from swcmp.policy import plan
    from swcmp.renewal import interrupted
    from swcmp.state import StateStore

    st = StateStore(env.paths).load(s.name)
    cert_path = env.paths.cert_file(s.name)
    info = _cert_info(cert_path, now)
    cert = None
    if info is not None and "error" not in info:
        cert = certs.load_certificate(cert_path.read_bytes())
    p = plan(s, cert, st, now)
    pending = interrupted(env.paths, s.name)
    if pending is not None:
        state = "polling" if pending == "waiting" else "in_progress"
        reason = f"an interrupted renewal (phase {pending}) is finished by the next run"
    elif role is not None and role.standby:
        state, reason = "standby", role.standby_reason()
    else:
        state, reason = p.state, p.reason
    last = st.last_result
    return {
        "session": s.name,
        "auto_update": s.auto_update,
        "state": state,
        "reason": reason,
        "certificate": info,
        "next_renewal": p.renew_at.isoformat() if p.renew_at else None,
        "next_attempt": st.next_attempt,
        "failures": st.failures,
        "last_result": (
            {
                "time": last.time,
                "action": last.action,
                "ok": last.ok,
                "message": last.message,
                "serial": last.serial,
            }
            if last is not None
            else None
        ),
        "charon": st.charon,
    }


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
    (auto-update off).
    """
    env = _env()
    now = _now()
    role, notes = _status_role(env)
    entries: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    if name is not None:
        entries.append(_status_entry(env, env.store.load(name), now, role))
    else:
        listing = env.store.list()
        entries = [_status_entry(env, s, now, role) for s in listing.sessions]
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
        text = render.status_table(text_entries, now=now, notes=notes)
    env.emit({"sessions": entries, "errors": errors}, text)


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
        deployer_for=lambda s: _deployer(env, no_deploy, s),
        host=HostConfig.load(env.paths),
        vici=env.vici if env.charon and not no_deploy else None,
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
        deployer_for=lambda s: _deployer(env, no_deploy, s),
        host=HostConfig.load(env.paths),
        vici=env.vici if env.charon and not no_deploy else None,
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
    """
    from swcmp.service import charon_start

    env = _env()
    if not env.charon:
        raise _refuse("hook charon-start needs charon", "give --vici URI (not 'none')")
    detail = charon_start(env.paths, env.vici)
    env.emit({"loaded": True, "detail": detail}, detail)


# --- entry point -----------------------------------------------------------------------


def iter_commands(
    command: click.Command = cli, path: tuple[str, ...] = ("swcmp",)
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command below ``command`` (inclusive), with its path; for docs and tests."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from iter_commands(sub, (*path, name))


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``swcmp`` command line (the console script and ``python -m swcmp``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="swcmp")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
