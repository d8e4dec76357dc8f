"""Sessions on disk: one human-readable TOML file each, written and read back exactly.

The file may be edited by hand: a bad file produces a
:class:`~swcmp.errors.SessionFileError` naming the file (and the line where known)
instead of a crash. Files are written atomically, mode 0640, under a lock.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import threading
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

from swcmp import fsutil
from swcmp.errors import ConfigError, SessionFileError, StorageError, StorageIOError
from swcmp.names import (
    validate_session_name,
)
from swcmp.session import (
    FIELDS,
    FILE_FORMAT,
    SESSION_FILE_MODE,
    Session,
    _err,
    _field_error,
    set_fields,
    unset_fields,
)
from swcmp.values import ExpireTime

# --- TOML ------------------------------------------------------------------------------

TomlValue = str | bool | int | list[str]
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            # TOML basic strings may not hold raw control characters.
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY_RE.fullmatch(key) else _toml_string(key)


def _toml_value(value: TomlValue) -> str:
    # bool before int: bool is a subclass of int in Python.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"integer {value} does not fit in TOML's 64 bits")
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        items = [_toml_string(v) if isinstance(v, str) else _bad_toml(v) for v in value]
        one_line = "[" + ", ".join(items) + "]"
        if len(one_line) <= 80:
            return one_line
        return "[\n" + "".join(f"    {item},\n" for item in items) + "]"
    return _bad_toml(value)


def _bad_toml(value: object) -> str:
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dumps_toml(values: Mapping[str, TomlValue], *, header: Iterable[str] = ()) -> str:
    """Write a flat TOML document: top-level keys with strings, bools, ints, lists of strings.

    ``tomllib.loads(dumps_toml(d)) == d`` for every such mapping.

    Args:
        values: keys and values, written in this order.
        header: comment lines put at the top (without the ``#``).

    Raises:
        TypeError: a value of another type.
        ValueError: text that is not valid Unicode, or an integer beyond 64 bits.
    """
    lines = [f"# {line}".rstrip() for text in header for line in text.splitlines() or [""]]
    for key, value in values.items():
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    doc = "\n".join(lines) + "\n"
    try:
        doc.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"text that cannot be written as UTF-8: {e.reason}") from None
    return doc


#: What the fast reader below takes, and nothing else: a basic string without escapes
#: (nor the control characters TOML forbids in one), a bare key.
_PLAIN_STR = r'"[^"\\\x00-\x1f\x7f]*"'
_PLAIN_LINE_RE = re.compile(
    rf"([A-Za-z0-9_-]+) = (?:({_PLAIN_STR})|(true|false)|(0|-?[1-9][0-9]{{0,17}})"
    rf"|\[((?:{_PLAIN_STR}(?:, {_PLAIN_STR})*)?)\]|(\[))")
_PLAIN_ITEM_RE = re.compile(rf"    ({_PLAIN_STR}),")
_PLAIN_STR_RE = re.compile(_PLAIN_STR)
#: Control characters TOML forbids anywhere outside escapes (tab aside), and tab and CR,
#: which the fast reader leaves to tomllib.
_TOML_CONTROL_RE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def _loads_plain(text: str) -> dict[str, TomlValue] | None:
    """The document as :func:`dumps_toml` writes it, read without tomllib (several times
    faster); None for anything else (a comment after a value, an escape, a table...),
    which tomllib then reads and checks. Where this returns a mapping, it is exactly
    ``tomllib.loads(text)`` (tests/unit/test_session.py compares the two)."""
    if _TOML_CONTROL_RE.search(text):
        return None
    out: dict[str, TomlValue] = {}
    lines = iter(text.split("\n"))
    for line in lines:
        if not line or line[0] == "#":
            continue
        m = _PLAIN_LINE_RE.fullmatch(line)
        if m is None or m[1] in out:
            return None
        key, string, boolean, integer, items, opened = m.groups()
        if string is not None:
            out[key] = string[1:-1]
        elif boolean is not None:
            out[key] = boolean == "true"
        elif integer is not None:
            out[key] = int(integer)
        elif items is not None:
            out[key] = [item[1:-1] for item in _PLAIN_STR_RE.findall(items)]
        elif opened:  # the writer's long list: one item a line, then "]"
            values: list[str] = []
            for item_line in lines:
                if item_line == "]":
                    break
                item = _PLAIN_ITEM_RE.fullmatch(item_line)
                if item is None:
                    return None
                values.append(item[1][1:-1])
            else:
                return None
            out[key] = values
    return out


def session_to_toml(session: Session) -> str:
    """The TOML text of a session file. Unset (None) settings are left out."""
    values: dict[str, TomlValue] = {"format": FILE_FORMAT}
    for name, value in session.values().items():
        if value is None:
            continue
        if isinstance(value, ExpireTime):
            values[name] = value.to_toml()
        elif isinstance(value, Path):
            values[name] = str(value)
        elif isinstance(value, tuple):
            values[name] = [str(v) for v in value]
        else:
            values[name] = cast(TomlValue, value)
    header = (
        f"swcmp CMP session {session.name!r}.",
        f"Change it with `swcmp session set {session.name} ...`; hand edits are checked on load.",
        "expire_time: percent of the validity period that REMAINS when renewing, or e.g. 30d.",
    )
    return dumps_toml(values, header=header)


_TOML_LINE_RE = re.compile(r"at line (\d+)")


def _line_of(text: str, key: str) -> int | None:
    # [ \t]* rather than \s*: \s would run across blank lines and report the wrong one.
    pattern = re.compile(
        rf"^[ \t]*(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')[ \t]*=",
        re.MULTILINE,
    )
    m = pattern.search(text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def session_from_toml(name: str, text: str, *, path: Path) -> Session:
    """Parse and check a session file's text.

    Raises:
        SessionFileError: a TOML syntax error (with its line), an unknown or
            misspelt setting, a value of the wrong type or an invalid value;
            the message starts with the file's path.
    """

    def fail(message: str, line: int | None, hint: str = "") -> SessionFileError:
        where = f"{path}:{line}" if line else str(path)
        return SessionFileError(
            f"{where}: {message}",
            path=str(path),
            line=line,
            hint=hint or f"fix the file, or delete it with `swcmp session delete {name}`",
        )

    try:
        plain = _loads_plain(text)
        data: dict[str, Any] = tomllib.loads(text) if plain is None else cast(dict[str, Any], plain)
    except tomllib.TOMLDecodeError as e:
        m = _TOML_LINE_RE.search(str(e))
        raise fail(f"not valid TOML: {e}", int(m.group(1)) if m else None) from None
    fmt = data.pop("format", FILE_FORMAT)
    if fmt != FILE_FORMAT:
        raise fail(
            f"format {fmt!r} is not supported (this swcmp reads format {FILE_FORMAT})",
            _line_of(text, "format"),
            "the file was written by another swcmp version",
        )
    for key in data:
        if key not in FIELDS:
            raise fail(
                f"unknown setting {key!r}",
                _line_of(text, key),
                "known settings: " + ", ".join(FIELDS),
            )
    try:
        session_name = validate_session_name(name)
    except ConfigError as e:
        raise fail(str(e.args[0]), None, e.hint) from None
    try:
        return Session(name=session_name, **data)
    except (ConfigError, TypeError) as e:
        # Session checks every value; only when one is wrong is each checked again on
        # its own, in the file's order, to say which line is wrong.
        for key, value in data.items():
            try:
                FIELDS[key].coerce(value)
            except ConfigError as bad:
                raise fail(_field_error(FIELDS[key], bad).args[0], _line_of(text, key),
                           bad.hint) from None
        raise fail(str(e.args[0]) if e.args else str(e), None) from None


# --- the store -------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionListing:
    """What :meth:`SessionStore.list` found: good sessions and per-file errors."""

    sessions: tuple[Session, ...]
    errors: tuple[SessionFileError, ...]


@functools.lru_cache(maxsize=4096)
def _session_file(sessions_dir: Path, name: str) -> Path:
    # a pass asks for each session's file several times; a Path costs more to build
    return sessions_dir / f"{validate_session_name(name)}.toml"


def forget_built_paths() -> None:
    """Drop the session file paths built so far (serve, after each pass)."""
    _session_file.cache_clear()


class SessionStore:
    """Sessions as files under ``<config_dir>/sessions``."""

    def __init__(self, config_dir: Path) -> None:
        """Use ``config_dir`` (the directory need not exist until a session is saved)."""
        self.config_dir = Path(config_dir)
        self.sessions_dir = self.config_dir / "sessions"

    def path_for(self, name: str) -> Path:
        """The file of session ``name`` (after validating the name)."""
        return _session_file(self.sessions_dir, name)

    def exists(self, name: str) -> bool:
        """Whether a file for session ``name`` exists."""
        return self.path_for(name).exists()

    def create(self, name: str, values: Mapping[str, object] | None = None) -> Session:
        """Create a new session with default settings (plus ``values``) and save it.

        Raises:
            ConfigError: invalid name or values, or the session already exists.
            StorageError: the file cannot be written.
        """
        session = Session(name=validate_session_name(name))
        if values:
            session = set_fields(session, values)
        self._check_key_unused(session)
        fsutil.ensure_dir(self.sessions_dir, mode=0o750)
        path = self.path_for(name)
        try:
            fsutil.atomic_write(
                path, session_to_toml(session).encode(), mode=SESSION_FILE_MODE, exclusive=True
            )
        except StorageError as e:
            if isinstance(e, StorageIOError) and e.errno == errno.EEXIST:
                raise _err(
                    f"session {name} already exists ({path})",
                    f"change it with `swcmp session set {name} ...` or delete it first",
                ) from None
            raise
        return session

    def load(self, name: str) -> Session:
        """Read and check session ``name``.

        Raises:
            ConfigError: invalid name, or no such session.
            SessionFileError: the file is unreadable or invalid.
        """
        path = self.path_for(name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise _err(
                f"no session named {name}", f"create it with `swcmp session create {name}`"
            ) from None
        except OSError as e:
            raise SessionFileError(
                f"{path}: cannot read: {e.strerror}",
                path=str(path),
                hint="run swcmp as root or fix the file's permissions",
            ) from None
        cache = _reading
        if cache is not None and (hit := cache.get((path, raw))) is not None:
            return hit
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.count(b"\n", 0, e.start) + 1
            raise SessionFileError(
                f"{path}:{line}: not valid UTF-8", path=str(path), line=line
            ) from None
        session = session_from_toml(name, text, path=path)
        if cache is not None:
            cache[(path, raw)] = session
        return session

    def save(self, session: Session) -> None:
        """Write ``session`` atomically, replacing its file.

        Raises:
            StorageError: the file cannot be written (the old file stays intact).
        """
        fsutil.ensure_dir(self.sessions_dir, mode=0o750)
        fsutil.atomic_write(
            self.path_for(session.name),
            session_to_toml(session).encode("utf-8"),
            mode=SESSION_FILE_MODE,
        )

    def update(
        self,
        name: str,
        *,
        set_values: Mapping[str, object] | None = None,
        unset: Iterable[str] = (),
        base_dir: Path | None = None,
    ) -> Session:
        """Load, change and save session ``name`` under its edit lock.

        ``unset`` is applied first, then ``set_values`` (see :func:`set_fields`).
        Nothing is written when a value is invalid.

        Returns:
            The saved session.
        """
        fsutil.ensure_dir(self.sessions_dir, mode=0o750)
        name = validate_session_name(name)
        with fsutil.exclusive_lock(
            self.sessions_dir, f".{name}", what=f"the settings of session {name}"
        ):
            session = self.load(name)
            session = unset_fields(session, unset)
            if set_values:
                session = set_fields(session, set_values, base_dir=base_dir)
            self._check_key_unused(session)
            self.save(session)
        return session

    def _check_key_unused(self, session: Session) -> None:
        """One key pair belongs to one session: a renewal with a new key would break
        any other session that certifies the same key file."""
        if session.key is None:
            return
        for other in self.list().sessions:
            if other.name != session.name and other.key == session.key:
                raise _err(
                    f"key pair {session.key!r} already belongs to session {other.name}",
                    f"give session {session.name} its own key: "
                    f"`swcmp session set {session.name} --key {session.name}`",
                )

    def delete(self, name: str) -> None:
        """Delete session ``name``'s file (keys, certificates and state are left alone).

        Raises:
            ConfigError: no such session.
            StorageError: the file cannot be removed.
        """
        path = self.path_for(name)
        if not fsutil.remove_file(path, missing_ok=True):
            raise _err(f"no session named {name}", "`swcmp session list` shows the sessions")

    def names(self) -> tuple[str, ...]:
        """File stems of all ``*.toml`` files in the sessions directory, sorted.

        Hidden files (temporary files, edit locks) are skipped; the names are not
        validated here (:meth:`list` reports invalid ones).
        """
        try:
            # plain names, sorted as strings: the order of sorted paths in one
            # directory, without building and comparing a Path per file
            entries = sorted(os.listdir(self.sessions_dir))
        except FileNotFoundError:
            return ()
        except OSError as e:
            raise fsutil.storage_error(e, self.sessions_dir, "list") from e
        return tuple(
            n.removesuffix(".toml")
            for n in entries
            if n.endswith(".toml") and not n.startswith(".")
        )

    def list(self) -> SessionListing:
        """Load every session; a bad file becomes an entry in ``errors``, not an exception.

        Raises:
            StorageError: only when the sessions directory itself cannot be read.
        """
        sessions: list[Session] = []
        errors: list[SessionFileError] = []
        for stem in self.names():
            try:
                sessions.append(self.load(stem))
            except SessionFileError as e:
                errors.append(e)
            except ConfigError as e:
                # An invalid file name (e.g. "bad name.toml") or a vanished file.
                path = self.sessions_dir / f"{stem}.toml"
                errors.append(SessionFileError(f"{path}: {e.args[0]}", path=str(path), hint=e.hint))
        return SessionListing(sessions=tuple(sessions), errors=tuple(errors))


# ---------------------------------------------------------------------- one reading per pass
# A renewal pass looks at every session several times (plan, CA maintenance, clean-up,
# metrics). Checking a session file costs far more than reading it, so within a pass a
# file whose bytes are unchanged is checked once; between passes nothing is kept.

_reading: dict[tuple[Path, bytes], Session] | None = None
_reading_depth = 0
_reading_lock = threading.Lock()

_P = ParamSpec("_P")
_R = TypeVar("_R")


@contextmanager
def one_reading() -> Iterator[None]:
    """While inside, :meth:`SessionStore.load` checks a file with the same bytes once
    (a changed file is read and checked again). Nests; threads share it."""
    global _reading, _reading_depth
    with _reading_lock:
        _reading_depth += 1
        if _reading is None:
            _reading = {}
    try:
        yield
    finally:
        with _reading_lock:
            _reading_depth -= 1
            if _reading_depth == 0:
                _reading = None


def reads_sessions_once(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorator: run ``fn`` inside :func:`one_reading`."""
    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with one_reading():
            return fn(*args, **kwargs)
    return wrapper
