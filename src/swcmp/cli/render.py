"""Turn command results into text for people and JSON for machines.

Every function here takes plain data (dicts from :meth:`Session.describe`,
:class:`~swcmp.checks.CheckResult` lists, state dicts) and returns a string or a
JSON-ready dict; nothing is printed and nothing heavy is imported, so the CLI
can import this module before it knows which command runs.

The JSON shapes built here are part of swcmp's interface and are documented
in ``docs/cli.md``; change them only compatibly (add keys, never rename).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from swcmp.cmp.text import INVISIBLE_CONTROLS

if TYPE_CHECKING:
    from swcmp.checks import CheckResult

__all__ = [
    "WIRE_ORDER_NOTE",
    "check_json",
    "check_text",
    "dump_json",
    "error_json",
    "session_list_text",
    "session_text",
    "stats_text",
    "status_table",
    "status_text",
    "urgency",
]

WIRE_ORDER_NOTE = (
    "DNs are shown in wire order (slash form, most significant RDN first): "
    "exactly what goes into the request."
)

# The statistics columns, in the order `swcmp stats` prints them.
STATS_REQUESTS = ("ir", "cr", "kur", "pollReq")
STATS_COUNTERS = ("sent", "received", "failed")


#: Characters that json.dumps(ensure_ascii=False) leaves raw but a terminal may obey
#: (DEL, the C1 controls such as CSI, line/paragraph separators, bidirectional controls).
_JSON_RAW_CONTROLS = re.compile(f"[\x7f-\x9f{INVISIBLE_CONTROLS}]")


def dump_json(data: object) -> str:
    """JSON text as swcmp prints it: indented, keys in insertion order, UTF-8 kept.

    C0 controls are escaped by JSON itself; the other controls are escaped here
    (they can only stand inside strings, where ``\\uNNNN`` means the same).
    """
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    return _JSON_RAW_CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


#: ``--local-time``: show times in the local time zone (``TZ``) instead of UTC.
LOCAL_TIME = False

_TIME_RE = re.compile(
    r"\b(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})(?::\d{2}(?:\.\d+)?)?(Z|[+-]\d{2}:?\d{2}| UTC)")
_SERIAL_RE = re.compile(r"\b(serial (?:number )?)(?:0x)?([0-9a-fA-F]+)\b(?!:)")


def format_time(when: datetime) -> str:
    """One time format for people: ISO 8601 to the minute, UTC (``2026-06-01T12:00Z``), or
    with ``--local-time`` the local time with its offset (``2026-06-01T14:00+02:00``)."""
    if when.tzinfo is None:
        return when.strftime("%Y-%m-%dT%H:%M")
    if LOCAL_TIME:
        local = when.astimezone()
        return local.strftime("%Y-%m-%dT%H:%M") + local.strftime("%z")[:3] + ":" + \
            local.strftime("%z")[3:]
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _time_match(m: re.Match[str]) -> str:
    zone = m.group(3).strip()
    zone = "+00:00" if zone in ("Z", "UTC") else zone
    if ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    try:
        when = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}{zone}")
    except ValueError:
        return m.group(0)
    return format_time(when)


def _serial_match(m: re.Match[str]) -> str:
    digits = m.group(2)
    if not any(c.isdigit() for c in digits):
        return m.group(0)  # a word, not a serial
    return m.group(1) + format_serial(int(digits, 16))


def human(text: str) -> str:
    """Text for people in one format: every zoned time as :func:`format_time`, every
    certificate serial as swanctl prints it (:func:`format_serial`). JSON is left alone."""
    return _SERIAL_RE.sub(_serial_match, _TIME_RE.sub(_time_match, text))


def format_serial(serial: int) -> str:
    """A certificate serial as swanctl prints it: colon-separated hex bytes (``69:17:0a``)."""
    digits = f"{serial:x}"
    digits = digits.zfill(len(digits) + len(digits) % 2)
    return ":".join(digits[i:i + 2] for i in range(0, len(digits), 2))


#: The stable ``code`` of a ``--json`` error, by exception class (the first class of the
#: error's MRO found here); docs/cli.md lists them. Names, not imports: render stays light.
ERROR_CODES: dict[str, str] = {
    "NeedsInitialRequest": "needs_initial_request",
    "TransactionAbandoned": "transaction_abandoned",
    "RenewalError": "renewal_failed",
    "SessionFileError": "session_file",
    "LockHeldError": "locked",
    "StorageIOError": "storage",
    "StorageError": "storage",
    "ConfigError": "refused",
    "CMPErrorResponse": "ca_error",
    "PollingTimeoutError": "polling_timeout",
    "ProtectionError": "protection",
    "ProtocolError": "protocol",
    "CertificateRejectedError": "certificate_rejected",
    "CertificateError": "certificate",
    "ConnectError": "connect",
    "TimeoutError_": "timeout",
    "HTTPStatusError": "http_status",
    "ContentTypeError": "content_type",
    "ResponseTooLargeError": "response_too_large",
    "TransportError": "transport",
}


def error_code(error: BaseException) -> str:
    """The stable ``code`` of ``error`` in ``--json`` output (``error`` for anything else)."""
    given = getattr(error, "json_code", None)
    if isinstance(given, str):
        return given
    for cls in type(error).__mro__:
        code = ERROR_CODES.get(cls.__name__)
        if code is not None:
            return code
    return "error"


def error_json(message: str, hint: str, code: str = "error") -> dict[str, Any]:
    """The ``--json`` shape of an error: ``{"error": ..., "hint": ... or null, "code": ...}``.

    ``code`` is stable (scripts may branch on it): ``usage`` for a bad command line,
    ``interrupted`` for SIGINT, else :func:`error_code`'s name for the error.
    """
    return {"error": message, "hint": hint or None, "code": code}


# --- checks ---------------------------------------------------------------------------


def check_json(session: str, results: Sequence[CheckResult]) -> dict[str, Any]:
    """The ``--json`` shape of ``session check``.

    ``{"session": NAME, "ok": bool, "checks": [{"name", "ok", "level", "detail", "fix"}, ...]}``.
    ``level`` is ``ok``, ``warn``, ``pending`` or ``fail``; ``ok`` (of an item and
    of the whole report) is false for ``fail`` and ``pending`` (what the first
    request makes is not there yet): both block auto-update, a warning does not.
    ``fix`` is an empty string for a passed check.
    """
    return {
        "session": session,
        "ok": all(r.ok for r in results),
        "checks": [
            {"name": r.name, "ok": r.ok, "level": r.level, "detail": r.detail, "fix": r.fix}
            for r in results
        ],
    }


_LEVEL_MARK = {"ok": "ok     ", "warn": "warn   ", "pending": "pending", "fail": "FAIL   "}


def check_text(session: str, results: Sequence[CheckResult]) -> str:
    """The check report: one line per check with ``ok``, ``warn`` or ``FAIL``, then the fix."""
    failed = [r for r in results if r.level == "fail"]
    warned = [r for r in results if r.level == "warn"]
    pending = [r for r in results if r.level == "pending"]
    width = max((len(r.name) for r in results), default=0)
    lines = []
    warn_note = f", {len(warned)} warning{'s' if len(warned) != 1 else ''}" if warned else ""
    if pending:
        warn_note += (f", {len(pending)} pending until the first request "
                      f"(swcmp request initial {session})")
    if failed:
        lines.append(f"session {session}: {len(failed)} of {len(results)} checks failed"
                     + warn_note)
    elif pending:
        lines.append(f"session {session}: no check failed{warn_note}")
    elif warned:
        lines.append(f"session {session}: no check failed{warn_note} "
                     "(warnings do not block auto-update)")
    else:
        lines.append(f"session {session}: all {len(results)} checks passed")
    for r in results:
        lines.append(f"  {_LEVEL_MARK[r.level]}  {r.name:<{width}}  {r.detail}")
        if r.level != "ok" and r.fix:
            lines.append(f"           {'':<{width}}  fix: {r.fix}")
    return "\n".join(lines)


# --- sessions -------------------------------------------------------------------------


def _poll_limit(value: object) -> str:
    from swcmp.values import format_seconds

    if not isinstance(value, int) or isinstance(value, bool):
        return _shown(value)
    return f"{format_seconds(value)} per waiting CA transaction, across runs"


def _shown(value: object, unset: str = "-") -> str:
    if value is None or value == "" or value == []:
        return unset
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _expire_text(value: object) -> str:
    text = str(value)
    if text.endswith("%"):
        return f"{text} (renew when {text} of the validity period REMAINS)"
    return f"{text} (renew this long before the certificate expires)"


def session_text(
    desc: Mapping[str, Any],
    *,
    path: str,
    auth_cert: tuple[str, bool] | None = None,
    auth_key: tuple[str, bool] | None = None,
    key_file: tuple[str, bool] | None = None,
) -> str:
    """``session show`` for people: one line per setting, by field name.

    Field names are those ``swcmp session unset`` takes. DNs are printed in wire
    (slash) order, and the text says so. The MAC secret is never shown, only its
    file's path.

    Args:
        desc: :meth:`Session.describe` of the session.
        path: the session file.
        auth_cert: the certificate that will sign requests after defaults, and
            whether the file exists (None when there is none).
        auth_key: the same for its key.
        key_file: the session's key pair file and whether it exists.
    """

    def presence(item: tuple[str, bool] | None, default: bool) -> str:
        if item is None:
            return "-"
        where, exists = item
        prefix = "(default) " if default else ""
        return f"{prefix}{where}" + ("" if exists else " (not present yet)")

    rows: list[tuple[str, str]] = [
        ("file", path),
        ("entity", _shown(desc.get("entity_wire"))),
        ("sans", _shown(desc.get("sans"))),
        ("ca_name", _shown(desc.get("ca_name_wire"))),
        ("server_url", _shown(desc.get("server_url"))),
        ("profile_label", _shown(desc.get("profile_label"))),
        ("operation_paths", _shown(desc.get("operation_paths"))),
        ("operation_urls", _shown(desc.get("operation_urls"))),
        ("ir_auth", _shown(desc.get("ir_auth"))),
    ]
    secret = desc.get("mac_secret_file")
    rows += [
        ("mac_ref", _shown(desc.get("mac_ref"))),
        ("mac_secret_file", f"{secret} (content not shown)" if secret else "-"),
        ("mac_alg", _shown(desc.get("mac_alg"))),
        ("mac_iterations", _shown(desc.get("mac_iterations"))),
    ]
    rows += [
        ("auth_cert", presence(auth_cert, desc.get("auth_cert") is None)),
        ("auth_key", presence(auth_key, desc.get("auth_key") is None)),
        ("trust", _shown(desc.get("trust"))),
        (
            "key",
            _shown(desc.get("key"))
            + (f": {presence(key_file, False)}" if key_file is not None else ""),
        ),
        ("key_type", f"{desc.get('key_type')} (for newly generated keys)"),
        ("regenerate", _shown(desc.get("regenerate"))),
        ("expire_time", _expire_text(desc.get("expire_time"))),
        ("connections", _shown(desc.get("connections"))),
        ("auto_update", "on" if desc.get("auto_update") else "off"),
        ("tls_ca_bundle", _shown(desc.get("tls_ca_bundle"), "- (system store)")),
        ("tls_client_cert", _shown(desc.get("tls_client_cert"))),
        ("tls_client_key", _shown(desc.get("tls_client_key"))),
        ("pkcs11_module", _shown(desc.get("pkcs11_module"))),
        ("pin_file", _shown(desc.get("pin_file"), "-") + (" (content not shown)"
                                                          if desc.get("pin_file") else "")),
        ("timeout", f"{desc.get('timeout')}s per exchange with the CA"),
        ("granted_with_mods", _shown(desc.get("granted_with_mods"))),
        ("renew_with", _shown(desc.get("renew_with"))),
        ("poll_limit", _poll_limit(desc.get("poll_limit"))),
    ]
    # Every other setting too (server_cert, extra_certs, ignore_keyusage, implicit_confirm,
    # cert_profile, revoke_superseded, ...): nothing a session holds is left out.
    shown = {k for k, _ in rows} | {"name"}
    rows += [(k, _shown(v)) for k, v in desc.items()
             if k not in shown and not k.endswith("_wire")]
    width = max(len(k) for k, _ in rows)
    lines = [f"session {desc.get('name')}"]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    lines.append(WIRE_ORDER_NOTE)
    return "\n".join(lines)


def session_list_text(
    sessions: Sequence[Mapping[str, Any]], errors: Sequence[Mapping[str, Any]], *,
    width: int | None = None,
) -> str:
    """``session list`` for people: a table of good sessions, then one line per broken file.

    With ``width`` the SERVER column is shortened first (its end), then the ENTITY column
    (its start, so that the CN stays), down to 12 characters each, so that rows fit.
    """
    if not sessions and not errors:
        return "no sessions (create one with `swcmp session create NAME`)"
    lines: list[str] = []
    if sessions:
        header = ("NAME", "AUTO", "ENTITY", "SERVER")
        rows = [
            (
                str(d["name"]),
                "on" if d.get("auto_update") else "off",
                human(_shown(d.get("entity_wire"))),
                human(_shown(_server_shown(d))),
            )
            for d in sessions
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        if width is not None:
            room = width - widths[0] - widths[1] - 6  # for ENTITY and SERVER
            if widths[2] + widths[3] > room:
                widths[3] = max(room - widths[2], _MIN_CELL)
            if widths[2] + widths[3] > room:
                widths[2] = max(room - widths[3], _MIN_CELL)
        for row in [header, *rows]:
            entity = row[2] if len(row[2]) <= widths[2] else "..." + row[2][3 - widths[2]:]
            server = row[3] if len(row[3]) <= widths[3] else row[3][: widths[3] - 3] + "..."
            cells = [f"{cell:<{w}}" for cell, w in zip((*row[:2], entity), widths,
                                                        strict=False)]
            lines.append("  ".join([*cells, server]).rstrip())
    for err in errors:
        lines.append(f"broken: {err['error']}")
        if err.get("hint"):
            lines.append(f"  hint: {err['hint']}")
    return "\n".join(lines)


def _server_shown(d: Mapping[str, Any]) -> object:
    """Where a session's messages go: the server URL with its profile label's path (two
    sessions on one CA differ only in it)."""
    from swcmp.cmp.urls import with_profile
    from swcmp.errors import ConfigError

    url, label = d.get("server_url"), d.get("profile_label")
    if isinstance(url, str) and isinstance(label, str):
        try:
            return with_profile(url, label)
        except ConfigError:  # a session file's own check refuses this: shown as stored
            return url
    return url


#: The narrowest a shortened table cell gets (with its "...").
_MIN_CELL = 12


# --- statistics and status -------------------------------------------------------------


def stats_text(per_session: Iterable[tuple[str, Mapping[str, Mapping[str, int]]]]) -> str:
    """``swcmp stats``: per session, sent/received/failed for IR, CR, KUR and pollReq.

    Other message types (certConf, genm...) are listed once one was counted.
    """
    blocks = []
    for name, stats in per_session:
        lines = [f"session {name}", f"  {'':<8}" + "".join(f"{c:>10}" for c in STATS_COUNTERS)]
        # IR, CR, KUR and pollReq always; other message types once they were used.
        others = [k for k in stats if k not in STATS_REQUESTS and any(stats[k].values())]
        for kind in [*STATS_REQUESTS, *others]:
            counts = stats.get(kind, {})
            lines.append(
                f"  {kind:<8}" + "".join(f"{int(counts.get(c, 0)):>10}" for c in STATS_COUNTERS)
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "no sessions"


def status_text(entries: Sequence[Mapping[str, Any]]) -> str:
    """``swcmp status``: state, certificate, next renewal and last result per session.

    Each entry has the shape of one item of ``status --json`` (see docs/cli.md).
    """
    if not entries:
        return "no sessions (create one with `swcmp session create NAME`)"
    blocks = []
    for e in entries:
        if e.get("error"):
            lines = [f"session {e['session']}: broken", f"  error  {e['error']}"]
            if e.get("hint"):
                lines.append(f"  hint   {e['hint']}")
            blocks.append("\n".join(lines))
            continue
        cert = e.get("certificate")
        if cert is None:
            cert_text = "none yet"
        elif cert.get("error"):
            cert_text = f"unreadable: {cert['error']}"
        else:
            cert_text = f"serial {cert['serial']}, valid until {cert['not_after']}" + (
                " (EXPIRED)" if cert.get("expired") else f" ({cert['days_left']} days left)"
            )
        last = e.get("last_result")
        if last:
            outcome = "ok" if last.get("ok") else "FAILED"
            last_text = f"{last.get('action')} {outcome} at {last.get('time')}"
            if last.get("message"):
                last_text += f": {last['message']}"
        else:
            last_text = "none"
        rows = [
            ("state", f"{_shown(e.get('state'))}: {e.get('reason') or ''}".rstrip(": ")),
            ("auto-update", "on" if e.get("auto_update") else "off"),
            ("certificate", cert_text),
            ("next renewal", _shown(e.get("next_renewal"))),
        ]
        if e.get("next_attempt"):
            rows.append(("next retry", f"{e['next_attempt']} ({e.get('failures', 0)} failures)"))
        rows.append(("last result", last_text))
        others = e.get("other_results") or {}
        for kind, label in (("ca", "last CA question"), ("manual", "last manual request")):
            other = others.get(kind)
            if other:
                text = (f"{other.get('action')} {'ok' if other.get('ok') else 'FAILED'} at "
                        f"{other.get('time')}")
                rows.append((label, text + (f": {other['message']}" if other.get("message")
                                            else "")))
        if e.get("charon"):
            rows.append(("charon", str(e["charon"])))
        if e.get("ca"):
            from swcmp.calife import status_rows

            rows += status_rows(e["ca"])
        width = max(len(k) for k, _ in rows)
        blocks.append(
            "\n".join([f"session {e['session']}"] + [f"  {k:<{width}}  {v}" for k, v in rows])
        )
    return "\n\n".join(blocks)


# --- the status table ------------------------------------------------------------------

#: Urgency groups of ``swcmp status``, most urgent first.
URGENCY = ("expired", "failing", "due", "ok")


def urgency(entry: Mapping[str, Any]) -> str:
    """The group of one status entry: expired, failing, due or ok.

    expired: the certificate's validity has ended. failing: the session file is
    broken, the certificate unreadable or revoked, renewals are failing, or
    auto-update is on but there is no valid certificate to renew. due: a renewal is due or running.
    ok: everything else (idle, auto-update off, standby).
    """
    if entry.get("error"):
        return "failing"
    cert = entry.get("certificate")
    if cert and cert.get("expired"):
        return "expired"
    state = entry.get("state")
    if (cert and cert.get("error")) or state == "failed" or entry.get("failures"):
        return "failing"
    if state == "needs_ir" and entry.get("auto_update"):
        return "failing"
    if state == "revoked":
        return "failing"
    if state in ("due", "in_progress", "polling"):
        return "due"
    return "ok"


def _short_time(iso: object, now: datetime | None) -> str:
    if not isinstance(iso, str) or not iso:
        return "-"
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if now is not None and when.tzinfo is not None and when <= now:
        return "now"
    return when.strftime("%Y-%m-%d %H:%M") + ("Z" if when.utcoffset() is not None
                                              and not when.utcoffset() else "")


def _days_left(entry: Mapping[str, Any]) -> tuple[str, float]:
    cert = entry.get("certificate")
    if not cert:
        return "-", float("inf")
    if cert.get("error"):
        return "unreadable", float("inf")
    if cert.get("expired"):
        return "EXPIRED", -1.0
    return str(cert.get("days_left", "?")), float(cert.get("days_left", 0))


def _last_text(entry: Mapping[str, Any], width: int = 100) -> str:
    if entry.get("error"):
        width = max(width, 160)  # the last column: the file and line must stay readable
        text = f"broken session file: {entry['error']}"
    else:
        last = entry.get("last_result")
        if not last:
            return "-"
        outcome = "ok" if last.get("ok") else "FAILED"
        text = f"{last.get('action')} {outcome} {_short_time(last.get('time'), None)}"
        if not last.get("ok") and last.get("message"):
            text += f": {last['message']}"
    return text if len(text) <= width else text[: width - 3] + "..."


def output_width() -> int | None:
    """The columns text tables may use: ``COLUMNS``, else the terminal's width when stdout
    is one; None (no limit) for pipes and files, which scripts read whole."""
    import os
    import shutil
    import sys

    given = os.environ.get("COLUMNS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    try:
        if sys.stdout.isatty():
            return shutil.get_terminal_size().columns
    except (AttributeError, ValueError, OSError):
        pass
    return None


def status_table(entries: Sequence[Mapping[str, Any]], *, now: datetime | None = None,
                 notes: Sequence[str] = (), width: int | None = None) -> str:
    """``swcmp status`` for many sessions: one row each, the most urgent first.

    Rows are grouped expired, failing, due, ok (:func:`urgency`), and within a
    group sorted by days left, then name. Each entry has the shape of one item
    of ``status --json``; a broken session file is ``{"session", "error", "hint"}``.
    ``notes`` are printed above the table (e.g. the HA role). With ``width`` the
    last column (the last result, the longest) is shortened so that rows fit.
    """
    if not entries:
        return "\n".join([*notes, "no sessions (create one with `swcmp session create NAME`)"])

    def key(e: Mapping[str, Any]) -> tuple[int, float, str]:
        return (URGENCY.index(urgency(e)), _days_left(e)[1], str(e.get("session")))

    header = ("SESSION", "URGENCY", "STATE", "AUTO", "DAYS LEFT", "NEXT RENEWAL", "LAST RESULT")
    rows = []
    for e in sorted(entries, key=key):
        rows.append((
            str(e.get("session")),
            urgency(e),
            "broken" if e.get("error") else _shown(e.get("state")),
            "-" if e.get("error") else ("on" if e.get("auto_update") else "off"),
            _days_left(e)[0],
            _short_time(e.get("next_renewal"), now),
            _last_text(e),
        ))
    shown: list[tuple[str, ...]] = [tuple(human(cell) for cell in row) for row in rows]
    widths = [max(len(r[i]) for r in [header, *shown]) for i in range(len(header) - 1)]
    room = None if width is None else max(width - sum(widths) - 2 * len(widths), 12)
    lines = list(notes)
    for row in [header, *shown]:
        cells = [f"{cell:<{w}}" for cell, w in zip(row, widths, strict=False)]
        last = row[-1]
        if room is not None and len(last) > room:
            last = last[: room - 3] + "..."
        lines.append("  ".join([*cells, last]).rstrip())
    counts = {g: sum(1 for r in rows if r[1] == g) for g in URGENCY}
    lines.append(", ".join(f"{n} {g}" for g, n in counts.items() if n)
                 + " (`swcmp status NAME` for details)")
    return "\n".join(lines)
