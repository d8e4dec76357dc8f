"""``swcmp session``: create, change, show, list, delete and check sessions."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import click

from swcmp.cli import render
from swcmp.cli.options import _setting_values, setting_options
from swcmp.cli.root import CliEnv, _env, _message, _name_argument, _now, _refuse, cli, json_option

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from swcmp.checks import CheckResult
    from swcmp.session import Session

log = logging.getLogger(__name__)

# --- session ---------------------------------------------------------------------------


@cli.group()
def session() -> None:
    """Configure CMP sessions: create, set, check, enable auto-update."""


# Option name (the click parameter) -> session field (config.FIELDS).


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


def _warn_if_below_floor(env: CliEnv, s: Session) -> None:
    """Say when expire_time asks for renewals sooner than swcmp's renewal floor allows."""
    from swcmp.cmp import certs
    from swcmp.errors import SwcmpError
    from swcmp.policy import floor_warning

    try:
        cert = certs.load_certificate(env.paths.cert_file(s.name).read_bytes())
    except (OSError, SwcmpError):
        cert = None
    why = floor_warning(s.expire_time, cert)
    if why:
        click.echo(f"warning: {why}", err=True)


def _warn_if_pinned_closes_sas(env: CliEnv, s: Session) -> None:
    """Say when charon (6.0 or later) closes IKE SAs each time a pinned renewal re-sends."""
    if not env.charon:
        return
    from swcmp.errors import SwcmpError
    from swcmp.strongswan.bindings import PINNED_FIX, pinned_release_warning

    try:
        why = pinned_release_warning(env.vici, env.paths.cert_file(s.name).read_bytes(),
                                     connections=s.connections, timeout=5.0)
    except (OSError, ValueError, SwcmpError):
        return  # no certificate yet, or charon unreachable: `session check` says so
    if why:
        click.echo(f"warning: {why}\n  fix: {PINNED_FIX}", err=True)


def _warn_about_names(env: CliEnv, s: Session, changed: list[str]) -> None:
    """Warn when a new CA name matches no known CA, or new names miss the certificate."""
    from swcmp.checks import name_checks

    if not {"ca_name", "trust", "entity", "sans"} & set(changed):
        return
    for result in name_checks(s, env.paths):
        if result.level in ("warn", "fail"):
            click.echo(f"warning: {result.name}: {result.detail}\n  fix: {result.fix}", err=True)


@session.command("create")
@_name_argument()
@setting_options
@json_option
def session_create(name: str, **options: Any) -> None:
    """Create session NAME, optionally with settings (the options of `session set`).

    The key pair defaults to NAME (private/NAME.key). Nothing is written when a
    value is refused.
    """
    from swcmp.checks import check_setting_files
    from swcmp.names import SessionName
    from swcmp.session import Session, set_fields

    env = _env()
    values = _setting_values(options)
    values.setdefault("key", name)
    # Validate everything (relative paths against the current directory) first.
    draft = set_fields(Session(name=SessionName(name)), values, base_dir=env.cwd)
    check_setting_files(draft, list(values), env.paths)
    created = env.store.create(name, {k: getattr(draft, k) for k in values})
    env.emit(
        created.describe(),
        f"created session {name} ({env.store.path_for(name)})\n" + _session_show_text(env, created),
    )
    _warn_about_names(env, created, list(values))


@session.command("set")
@_name_argument()
@setting_options
@json_option
def session_set(name: str, **options: Any) -> None:
    """Change settings of session NAME; the others stay as they are.

    Relative paths are taken from the current directory and stored absolute.
    Every value is checked first: on any error nothing is written.
    """
    from swcmp.checks import check_setting_files
    from swcmp.session import set_fields

    env = _env()
    values = _setting_values(options)
    if not values:
        raise click.UsageError("nothing to set: give at least one option (see --help)")
    current = env.store.load(name)
    draft = set_fields(current, values, base_dir=env.cwd)
    check_setting_files(draft, list(values), env.paths)
    saved = env.store.update(name, set_values=values, base_dir=env.cwd)
    env.emit(saved.describe(), _session_show_text(env, saved))
    _warn_about_names(env, saved, list(values))
    _warn_if_auto_update_breaks(env, saved)
    _warn_if_pinned_closes_sas(env, saved)
    if "expire_time" in values:
        _warn_if_below_floor(env, saved)


def _complete_fields(incomplete: str) -> list[CompletionItem]:
    """The settings `session unset` takes (field names as `session show` prints them)."""
    from click.shell_completion import CompletionItem

    from swcmp.session import FIELDS

    return [CompletionItem(f) for f in FIELDS if f.startswith(incomplete) and f != "auto_update"]


@session.command("unset")
@_name_argument()
@click.argument("fields", nargs=-1, required=True, metavar="FIELD...",
                shell_complete=lambda ctx, param, incomplete: _complete_fields(incomplete))
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
    env.emit({"sessions": sessions, "errors": errors}, render.session_list_text(sessions, errors,
                                                           width=render.output_width()))


@session.command("delete")
@_name_argument()
@click.option("--revoke", is_flag=True,
              help="Decommissioning: first revoke the session's current certificate at the "
              "CA (rr, reason cessationOfOperation), then remove that certificate and its key "
              "from the swanctl directory and unload the key from a running charon; the "
              "session is kept if the revocation fails.")
@json_option
def session_delete(name: str, revoke: bool) -> None:
    """Delete session NAME's settings; its key, certificates and state stay on disk.

    With --revoke the revoked certificate (x509/NAME.crt) and its key file
    (private/KEY.key, unless another session uses the same key) are removed too,
    so `swanctl --load-creds` no longer loads them, and the key is unloaded from a
    running charon (the certificate stays listed until charon restarts: VICI cannot
    unload certificates, and without its key charon cannot use it).
    """
    env = _env()
    path = env.store.path_for(name)
    revoked = None
    removed: list[str] = []
    unloaded = None
    if revoke:
        from swcmp.calife import CaLife, reason_code

        s = env.store.load(name)
        revoked = CaLife(env.paths).revoke(
            s, reason=reason_code("cessationOfOperation"), advise=False).message
        unloaded = _unload_revoked_key(env, s)
        removed = _remove_revoked_pair(env, s)
    env.store.delete(name)
    if revoke:
        text = (f"deleted session {name} ({path}); removed "
                f"{', '.join(removed) or 'no files'}; its state is left in place")
        if unloaded:
            text += f"\n{unloaded}"
    else:
        text = (f"deleted session {name} ({path}); its key, certificates and state are left "
                "in place")
    data: dict[str, object] = {"session": name, "deleted": True, "path": str(path)}
    if revoked is not None:
        data["revoked"] = revoked
        data["removed"] = removed
        data["charon"] = unloaded
    env.emit(data, f"{revoked}\n{text}" if revoked else text)


def _unload_revoked_key(env: CliEnv, s: Session) -> str | None:
    """Unload the revoked certificate's key from charon, if reachable; say what happened.

    None with --vici none or without a certificate. A key another session uses stays.
    """
    from swcmp.cli.requests import _charon

    charon = _charon(env, no_deploy=False)
    if charon is None:
        return None
    from swcmp.deploy import DeployError, DeployUnavailable
    from swcmp.strongswan import key_id_from_cert_pem

    try:
        key_id = key_id_from_cert_pem(env.paths.cert_file(s.name).read_bytes())
    except (OSError, ValueError):
        return None
    others = [o.name for o in env.store.list().sessions if o.name != s.name and o.key == s.key]
    if others:
        return (f"its key {key_id} stays loaded in charon: session {others[0]} uses the "
                "same key")
    try:
        held = charon.unload_key(key_id)
    except DeployUnavailable as e:
        return (f"charon could not be reached ({_message(e)}), so the revoked key {key_id} "
                "may still be loaded in it: when charon runs, run `swanctl --load-creds` "
                "(it unloads keys whose files are gone)")
    except DeployError as e:
        return (f"charon did not unload the revoked key {key_id}: {_message(e)}; run "
                "`swanctl --load-creds` (it unloads keys whose files are gone)")
    if not held:
        return f"charon did not hold the revoked key {key_id}"
    return (f"unloaded the revoked key {key_id} from charon (the certificate stays listed "
            "until charon restarts; without its key charon cannot use it)")


def _remove_revoked_pair(env: CliEnv, s: Session) -> list[str]:
    """Remove the revoked certificate, its key file (kept if another session uses it) and,
    for a key in a token, the secrets entry in swanctl's conf.d (it holds the PIN and
    would make `swanctl --load-creds` load the token's key again)."""
    from swcmp import fsutil
    from swcmp.keystore.token_checks import secrets_file
    from swcmp.session import session_key_file

    files = [env.paths.cert_file(s.name), secrets_file(env.paths, s)]
    key_file = session_key_file(s, env.paths)
    shared = any(o.name != s.name and o.key == s.key for o in env.store.list().sessions)
    if key_file is not None and not shared:
        files.append(key_file)
    return [str(f) for f in files if fsutil.remove_file(f, missing_ok=True)]


def _run_checks(env: CliEnv, s: Session) -> list[CheckResult]:
    """The built-in checks, plus "strongswan" (charon uses the certificate) unless --vici none."""
    from swcmp.checks import ExtraCheck, run_checks

    extra: list[ExtraCheck] = []
    if env.charon:
        from swcmp.strongswan import binding_check

        extra.append(binding_check(env.vici))
    from swcmp.calife import roots_check

    extra.append(roots_check)
    return run_checks(s, env.paths, now=_now(), extra_checks=extra)


@session.command("check")
@_name_argument()
@json_option
def session_check(name: str) -> None:
    """Run every check of session NAME: ok, warn or FAIL, what was found, and the fix.

    These are the checks that guard enable-auto-update: a FAIL blocks it, a
    warning (charon not reachable, no connection uses the certificate yet) does
    not. Items the first request makes (the certificate, a generated key) are
    `pending` before it: they block auto-update but are no failure. Exit code 1
    if any check fails, 0 with warnings and pending items alone.
    """
    env = _env()
    results = _run_checks(env, env.store.load(name))
    env.emit(render.check_json(name, results), render.check_text(name, results))
    if any(r.level == "fail" for r in results):
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
                f"{sum(not r.ok for r in results)} check(s) failed or pending",
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
