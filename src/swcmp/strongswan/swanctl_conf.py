"""swanctl.conf in strongSwan's settings syntax, and the ``load-conn`` messages swanctl builds.

This module is pure (no :mod:`vici`, no sockets): it reads files and builds
Python values that :mod:`swcmp.strongswan` sends over VICI. It follows
strongSwan 5.9.8 (``src/libstrongswan/settings/``, ``utils/parser_helper.c``,
``src/swanctl/commands/load_conns.c``):

Syntax
    ``name { ... }`` opens a section (``name`` and ``{`` may be separated by
    one line break); ``key = value`` sets a value that runs to the end of the
    line, a ``#`` or a ``}``; unquoted words of a value are joined by single
    spaces; ``"..."`` strings keep their spaces, may span lines and know the
    escapes ``\\n \\r \\t``, backslash-newline (joins lines) and ``\\x`` (the
    character ``x``); ``#`` starts a comment; ``key =`` with no value hides the
    key. A ``"`` outside a value is an error.
Includes
    ``include PATTERN`` (not followed by ``=``) reads the files matching the
    glob ``PATTERN`` (sorted) right there, so an include inside a section adds
    to that section. A relative pattern is relative to the including file's
    directory. A pattern that matches nothing is ignored, as charon does.
Merging
    A section defined twice is one section: new keys and subsections are
    appended, a repeated key keeps its first position and takes the later
    value. Enumeration follows the order of first definition.
load-conn
    Every key and subsection of ``connections.<name>``; the keys in
    :data:`LIST_KEYS` become lists (split at ``,``, spaces trimmed, quoted
    items kept whole); the keys in :data:`FILE_LIST_KEYS` become lists of file
    contents: ``certs`` relative to ``x509/``, ``cacerts`` relative to
    ``x509ca/``, ``pubkeys`` relative to ``pubkey/`` under the swanctl
    directory (absolute paths as given), ``0x...``/``0s...`` items are inline
    hex/base64 blobs.
"""

from __future__ import annotations

import base64
import binascii
import glob
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from swcmp.errors import ConfigError

__all__ = [
    "FILE_LIST_KEYS",
    "LIST_KEYS",
    "SWANCTL_DIRS",
    "CertReference",
    "ConfSection",
    "ConfSyntaxError",
    "LoadConnError",
    "build_load_conn",
    "cert_references",
    "connections_using_cert",
    "parse_file",
    "parse_string",
    "resolve_file_ref",
    "split_list",
]

log = logging.getLogger(__name__)

LIST_KEYS = frozenset({
    "local_addrs", "remote_addrs", "proposals", "esp_proposals", "ah_proposals",
    "local_ts", "remote_ts", "vips", "pools", "groups", "cert_policy",
})
"""Keys swanctl sends as lists of strings (compared case-insensitively, as swanctl does)."""

FILE_LIST_KEYS = frozenset({"certs", "cacerts", "pubkeys"})
"""Keys swanctl sends as lists of file contents (compared case-insensitively)."""

SWANCTL_DIRS = {"certs": "x509", "cacerts": "x509ca", "pubkeys": "pubkey"}
"""The swanctl sub-directory a relative file name is looked up in (exact key names only)."""

MAX_INCLUDE_DEPTH = 32
"""Nested includes deeper than this are reported as a loop."""


class ConfSyntaxError(ConfigError):
    """swanctl.conf (or a file it includes) cannot be parsed.

    Attributes:
        path: the file with the error.
        line: the 1-based line number.
    """

    def __init__(self, path: Path | str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = Path(path)
        self.line = line
        self.reason = message


class LoadConnError(ConfigError):
    """A ``load-conn`` message cannot be built (no such connection, unreadable file)."""


# --------------------------------------------------------------------------- tree


@dataclass
class ConfValue:
    """One setting: its value (None for ``key =``) and where it was last set."""

    value: str | None
    path: Path | None
    line: int


@dataclass
class ConfSection:
    """A section of a settings file: keys and subsections in order of first definition.

    Attributes:
        name: the section name (empty for the top level).
        values: key -> :class:`ConfValue`; a key set without value stays here with
            ``value`` None and is hidden by :meth:`items`, as in strongSwan.
        sections: name -> subsection.
        path: the file that first defined the section.
        line: where it was first defined.
    """

    name: str = ""
    values: dict[str, ConfValue] = field(default_factory=dict)
    sections: dict[str, ConfSection] = field(default_factory=dict)
    path: Path | None = None
    line: int = 0

    def items(self) -> Iterator[tuple[str, str]]:
        """The ``(key, value)`` pairs that have a value, in order."""
        for key, setting in self.values.items():
            if setting.value is not None:
                yield key, setting.value

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of ``key`` in this section (no dots), or ``default``."""
        setting = self.values.get(key)
        if setting is None or setting.value is None:
            return default
        return setting.value

    def section(self, dotted: str) -> ConfSection | None:
        """The subsection at ``dotted`` (``"connections.gw.local"``), or None."""
        current: ConfSection | None = self
        for part in dotted.split("."):
            if current is None:
                return None
            current = current.sections.get(part)
        return current

    def extend(self, other: ConfSection) -> None:
        """Merge ``other`` into this section the way strongSwan does."""
        for name, sub in other.sections.items():
            existing = self.sections.get(name)
            if existing is None:
                self.sections[name] = sub
            else:
                existing.extend(sub)
        for key, setting in other.values.items():
            self.values[key] = setting  # an existing key keeps its position

    def to_dict(self) -> dict[str, object]:
        """Plain nested dicts of the visible values (for tests and debugging)."""
        out: dict[str, object] = dict(self.items())
        for name, sub in self.sections.items():
            out[name] = sub.to_dict()
        return out


# --------------------------------------------------------------------------- lexer

_NAME, _STRING, _NEWLINE, _LBRACE, _RBRACE, _EQ, _EOF = (
    "NAME", "STRING", "NEWLINE", "'{'", "'}'", "'='", "end of file")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    path: Path | None
    line: int


def _display(path: Path | None) -> str:
    return str(path) if path is not None else "<string>"


class _Lexer:
    """Tokens of one file, with included files' tokens spliced in where the include stands."""

    _NAME_STOP = frozenset('#{}="\r\n\t ')
    _VALUE_STOP = frozenset('#}"\r\n\t ')
    _INCLUDE_STOP = frozenset('"\\#}\r\n\t ')

    def __init__(self, text: str, path: Path | None, depth: int, warnings: list[str]) -> None:
        self.text = text
        self.path = path
        self.depth = depth
        self.warnings = warnings
        self.pos = 0
        self.line = 1

    def _error(self, message: str, line: int | None = None) -> ConfSyntaxError:
        return ConfSyntaxError(_display(self.path), line or self.line, message)

    def tokens(self) -> Iterator[_Token]:
        """All tokens of the file, included files' tokens in place of the include."""
        depth = 0
        for tok in self._tokens():
            if tok.path == self.path:
                depth += {_LBRACE: 1, _RBRACE: -1}.get(tok.kind, 0)
            yield tok
        if depth and self.depth:
            # strongSwan allows it (the token stream simply goes on), but it is rarely meant
            self.warnings.append(
                f"{_display(self.path)}:{self.line}: unbalanced braces: the file "
                + (f"leaves {depth} section(s) open" if depth > 0
                   else f"closes {-depth} section(s) it did not open"))

    def _tokens(self) -> Iterator[_Token]:
        text, n = self.text, len(self.text)
        while self.pos < n:
            ch = text[self.pos]
            if ch in "\t\r ":
                self.pos += 1
            elif ch == "#":
                end = text.find("\n", self.pos)
                self.pos = n if end == -1 else end
            elif ch == "\n":
                yield _Token(_NEWLINE, "\n", self.path, self.line)
                self.line += 1
                self.pos += 1
            elif ch in "{}":
                yield _Token(_LBRACE if ch == "{" else _RBRACE, ch, self.path, self.line)
                self.pos += 1
            elif ch == "=":
                yield _Token(_EQ, ch, self.path, self.line)
                self.pos += 1
                yield from self._value()
            elif ch == '"':
                raise self._error("unexpected string detected")
            else:
                start = self.pos
                while self.pos < n and text[self.pos] not in self._NAME_STOP:
                    self.pos += 1
                word = text[start:self.pos]
                if word == "include" and self._include_follows():
                    yield from self._include()
                else:
                    yield _Token(_NAME, word, self.path, self.line)

    def _include_follows(self) -> bool:
        """``include`` + blanks + a character that is not ``=`` (flex's trailing context)."""
        pos = self.pos
        while pos < len(self.text) and self.text[pos] in "\t ":
            pos += 1
        return pos > self.pos and pos < len(self.text) and self.text[pos] != "="

    def _value(self) -> Iterator[_Token]:
        """The words and strings after ``=`` up to the end of the line, ``#`` or ``}``."""
        text, n = self.text, len(self.text)
        while self.pos < n:
            ch = text[self.pos]
            if ch in "\t\r ":
                self.pos += 1
            elif ch in "#}\n":
                return
            elif ch == '"':
                line = self.line
                yield _Token(_STRING, self._string(), self.path, line)
            else:
                start = self.pos
                while self.pos < n and text[self.pos] not in self._VALUE_STOP:
                    self.pos += 1
                yield _Token(_NAME, text[start:self.pos], self.path, self.line)

    def _string(self) -> str:
        """A quoted string starting at the opening quote; returns its unescaped content."""
        text, n = self.text, len(self.text)
        start_line = self.line
        self.pos += 1
        out: list[str] = []
        while True:
            if self.pos >= n:
                raise self._error("unterminated string detected", start_line)
            ch = text[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "\r":
                self.pos += 1
            elif ch == "\\":
                if self.pos + 1 >= n:
                    raise self._error("unterminated string detected", start_line)
                nxt = text[self.pos + 1]
                if nxt == "\r" and text.startswith("\n", self.pos + 2):
                    self.pos += 3  # escaped CRLF: join the lines
                    self.line += 1
                    continue
                self.pos += 2
                if nxt == "\n":
                    self.line += 1  # escaped newline: join the lines
                else:
                    out.append({"n": "\n", "r": "\r", "t": "\t"}.get(nxt, nxt))
            else:
                if ch == "\n":
                    self.line += 1
                out.append(ch)
                self.pos += 1

    def _include(self) -> Iterator[_Token]:
        """Read the include pattern after ``include`` and yield the included files' tokens."""
        text, n = self.text, len(self.text)
        line = self.line
        while self.pos < n and text[self.pos] in "\t ":
            self.pos += 1
        parts: list[str] = []
        while self.pos < n:
            ch = text[self.pos]
            if ch in "#}\n\t ":
                break
            if ch == "\r":
                self.pos += 1
            elif ch == '"':
                parts.append(self._string())
                break  # a quoted pattern ends the include right away
            elif ch == "\\":
                if self.pos + 1 < n and text[self.pos + 1] in '"#} ':
                    parts.append(text[self.pos + 1])
                    self.pos += 2
                else:
                    parts.append("\\")
                    self.pos += 1
            else:
                start = self.pos
                while self.pos < n and text[self.pos] not in self._INCLUDE_STOP:
                    self.pos += 1
                parts.append(text[start:self.pos])
        pattern = "".join(parts)
        where = f"{_display(self.path)}:{line}"
        if not pattern:
            self.warnings.append(f"{where}: no include pattern specified, ignored")
            return
        if not pattern.startswith("/") and self.path is not None:
            pattern = os.path.join(os.path.dirname(self.path), pattern)
        matches = sorted(glob.glob(pattern))
        if not matches:
            self.warnings.append(f"{where}: no files found matching '{pattern}'")
            log.debug("%s: no files found matching %r", where, pattern)
            return
        if self.depth >= MAX_INCLUDE_DEPTH:
            raise self._error(f"includes nested deeper than {MAX_INCLUDE_DEPTH} "
                              f"(an include loop?) at '{pattern}'", line)
        for match in matches:
            try:
                content = Path(match).read_text(encoding="utf-8", errors="surrogateescape")
            except OSError as e:
                # charon logs "unable to open" and goes on
                self.warnings.append(f"{where}: unable to open '{match}': {e.strerror or e}")
                continue
            yield from _Lexer(content, Path(match), self.depth + 1, self.warnings).tokens()


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, tokens: Iterator[_Token], path: Path | None,
                 warnings: list[str]) -> None:
        self._tokens = tokens
        self._warnings = warnings
        self._buffer: list[_Token] = []
        self._last_path = path
        self._last_line = 1

    def _next(self) -> _Token:
        if self._buffer:
            return self._buffer.pop()
        tok = next(self._tokens, None)
        if tok is None:
            return _Token(_EOF, "", self._last_path, self._last_line)
        self._last_path, self._last_line = tok.path, tok.line
        return tok

    def _push(self, tok: _Token) -> None:
        self._buffer.append(tok)

    @staticmethod
    def _unexpected(tok: _Token, expecting: str) -> ConfSyntaxError:
        if tok.kind == _NEWLINE:
            shown = "end of line"
        elif tok.kind == _EOF:
            shown = _EOF
        else:
            shown = f"{tok.kind} [{tok.text}]"
        return ConfSyntaxError(_display(tok.path), tok.line,
                               f"syntax error, unexpected {shown}, expecting {expecting}")

    def statements(self, section: ConfSection, opener: _Token | None) -> None:
        while True:
            tok = self._next()
            if tok.kind == _NEWLINE:
                continue
            if tok.kind == _EOF:
                if opener is not None:
                    notes = [w for w in self._warnings if "unbalanced braces" in w]
                    raise ConfSyntaxError(
                        _display(tok.path), tok.line,
                        f"section '{section.name}' opened at {_display(opener.path)}:"
                        f"{opener.line} is not closed (missing '}}')"
                        + (f"; note: {'; '.join(notes)}" if notes else ""))
                return
            if tok.kind == _RBRACE:
                if opener is None:
                    raise ConfSyntaxError(_display(tok.path), tok.line,
                                          "unexpected '}' (no section is open)")
                return
            if tok.kind != _NAME:
                raise self._unexpected(tok, "a name")
            self._statement(section, tok)

    def _statement(self, section: ConfSection, name: _Token) -> None:
        tok = self._next()
        if tok.kind == _EQ:
            parts: list[str] = []
            while True:
                part = self._next()
                if part.kind not in (_NAME, _STRING):
                    self._push(part)
                    break
                parts.append(part.text)
            value = " ".join(parts) if parts else None
            section.values[name.text] = ConfValue(value, name.path, name.line)
            return
        if tok.kind == _NEWLINE:
            brace = self._next()
            if brace.kind != _LBRACE:
                raise self._unexpected(brace, "'{'")
            tok = brace
        if tok.kind != _LBRACE:
            raise self._unexpected(tok, "'=' or '{'")
        sub = ConfSection(name=name.text, path=name.path, line=name.line)
        self.statements(sub, name)
        existing = section.sections.get(sub.name)
        if existing is None:
            section.sections[sub.name] = sub
        else:
            existing.extend(sub)


def parse_string(text: str, path: Path | str | None = None,
                 warnings: list[str] | None = None) -> ConfSection:
    """Parse settings text.

    Args:
        text: the file content.
        path: the file it came from: relative includes are resolved against its
            directory and errors name it. Without a path, relative includes are
            relative to the current directory.
        warnings: a list that receives non-fatal findings (includes that match
            nothing, files that cannot be opened).

    Returns:
        The top-level section.

    Raises:
        ConfSyntaxError: the text (or an included file) is not valid.
    """
    p = Path(path) if path is not None else None
    found: list[str] = [] if warnings is None else warnings
    root = ConfSection()
    _Parser(_Lexer(text, p, 0, found).tokens(), p, found).statements(root, None)
    return root


def parse_file(path: Path | str, warnings: list[str] | None = None) -> ConfSection:
    """Parse a settings file such as swanctl.conf, with its includes.

    Raises:
        ConfSyntaxError: a file is not valid.
        ConfigError: ``path`` cannot be read.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as e:
        raise ConfigError(f"cannot read {p}: {e.strerror or e}").with_hint(
            "point swcmp at swanctl.conf (default /etc/swanctl/swanctl.conf)") from None
    return parse_string(text, p, warnings)


# --------------------------------------------------------------------------- load-conn


def split_list(value: str, sep: str = ",", trim: str = " ") -> list[str]:
    """Split a comma list like strongSwan's token enumerator.

    Separators and ``trim`` characters before an item are skipped (so there are
    no empty items), an item starting with ``"`` or ``'`` runs to the matching
    quote, other items end at the next separator with ``trim`` characters cut
    off the end.
    """
    items: list[str] = []
    pos, n = 0, len(value)
    while True:
        while pos < n and (value[pos] in trim or value[pos] in sep):
            pos += 1
        if pos >= n:
            return items
        if value[pos] in "\"'":
            end = value.find(value[pos], pos + 1)
            if end != -1:
                items.append(value[pos + 1:end])
                pos = end + 1
                continue
        ends = [i for i in (value.find(s, pos) for s in sep) if i != -1]
        end = min(ends) if ends else n
        token = value[pos:end]
        while token and token[-1] in trim:
            token = token[:-1]
        if end == n and not token:
            return items
        items.append(token)
        if end == n:
            return items
        pos = end + 1


def resolve_file_ref(key: str, token: str, swanctl_dir: Path | str) -> Path:
    """The file swanctl reads for one item of a ``certs``/``cacerts``/``pubkeys`` list.

    A relative name is looked up in the key's directory under ``swanctl_dir``
    (only for the exact lower-case key names, like swanctl); an absolute one is
    used as given.
    """
    path = Path(token)
    if path.is_absolute():
        return path
    sub = SWANCTL_DIRS.get(key)
    if sub is None:  # e.g. "CERTS": swanctl opens it relative to its working directory
        return path
    return Path(swanctl_dir) / sub / token


def _inline_blob(token: str) -> bytes | None:
    prefix = token[:2].lower()
    if prefix == "0x":
        digits = "".join(c for c in token[2:] if c not in ": ")
        if len(digits) % 2:
            digits = "0" + digits
        try:
            return bytes.fromhex(digits)
        except ValueError:
            return b""
    if prefix == "0s":
        try:
            return base64.b64decode(token[2:])
        except (binascii.Error, ValueError):
            return b""
    return None


def _resolve_real(path: Path) -> str:
    return os.path.realpath(path)


def _file_list(key: str, value: str, swanctl_dir: Path, where: str,
               overrides: Mapping[str, bytes]) -> list[bytes]:
    blobs: list[bytes] = []
    for token in split_list(value):
        blob = _inline_blob(token)
        if blob is not None:
            blobs.append(blob)
            continue
        path = resolve_file_ref(key, token, swanctl_dir)
        real = _resolve_real(path)
        if real in overrides:
            blobs.append(overrides[real])
            continue
        try:
            blobs.append(path.read_bytes())
        except OSError as e:
            raise LoadConnError(
                f"{where}: loading {key} certificate '{path}' failed: {e.strerror or e}"
            ).with_hint("swanctl --load-conns fails the same way: fix the file name") from None
    return blobs


def _wire(value: str) -> str | bytes:
    """A value as sent: text, or the original bytes when the file was not UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape")
    return value


def _section_message(section: ConfSection, swanctl_dir: Path, where: str,
                     overrides: Mapping[str, bytes]) -> dict[str, object]:
    message: dict[str, object] = {}
    for key, value in section.items():
        lower = key.lower()
        if lower in LIST_KEYS:
            message[key] = [_wire(item) for item in split_list(value)]
        elif lower in FILE_LIST_KEYS:
            message[key] = _file_list(key, value, swanctl_dir, f"{where}.{key}", overrides)
        else:
            message[key] = _wire(value)
    for name, sub in section.sections.items():
        message[name] = _section_message(sub, swanctl_dir, f"{where}.{name}", overrides)
    return message


def build_load_conn(conf: ConfSection, name: str, swanctl_dir: Path | str, *,
                    overrides: Mapping[Path | str, bytes] | None = None) -> dict[str, object]:
    """Build the ``load-conn`` message swanctl sends for connection ``name``.

    Args:
        conf: the parsed swanctl.conf.
        name: the connection (a subsection of ``connections``).
        swanctl_dir: swanctl's directory (``x509/``, ``x509ca/``, ``pubkey/`` are under it).
        overrides: file path -> content to send instead of reading the file
            (used to re-send a connection with the previous certificate). Paths
            are compared after resolving symlinks.

    Returns:
        ``{name: {...}}``: strings, lists of strings, lists of bytes and nested dicts,
        ready for ``vici.Session.load_conn``.

    Raises:
        LoadConnError: there is no such connection, or a referenced file cannot be read.
    """
    section = conf.section("connections")
    conn = section.sections.get(name) if section is not None else None
    if conn is None:
        known = ", ".join(section.sections) if section is not None else ""
        raise LoadConnError(f"swanctl.conf has no connection '{name}'"
                            + (f" (it has: {known})" if known else " (no connections section)"))
    real_overrides = {_resolve_real(Path(p)): data for p, data in (overrides or {}).items()}
    return {name: _section_message(conn, Path(swanctl_dir), f"connections.{name}",
                                   real_overrides)}


# --------------------------------------------------------------------------- references


@dataclass(frozen=True)
class CertReference:
    """A connection's ``local*`` section that names a certificate file in ``certs``.

    Attributes:
        connection: the connection name.
        section: the auth section (``local``, ``local-1``...).
        path: the file swanctl reads for it.
    """

    connection: str
    section: str
    path: Path


def cert_references(conf: ConfSection, swanctl_dir: Path | str) -> tuple[CertReference, ...]:
    """Every file named by ``connections.<name>.local*.certs``, in configuration order."""
    refs: list[CertReference] = []
    connections = conf.section("connections")
    if connections is None:
        return ()
    for name, conn in connections.sections.items():
        for sub_name, sub in conn.sections.items():
            if not sub_name.startswith("local"):
                continue
            for key, value in sub.items():
                if key.lower() != "certs":
                    continue
                for token in split_list(value):
                    if _inline_blob(token) is None:
                        refs.append(CertReference(
                            name, sub_name, resolve_file_ref(key, token, swanctl_dir)))
    return tuple(refs)


def connections_using_cert(conf: ConfSection, swanctl_dir: Path | str,
                           cert_path: Path | str) -> tuple[str, ...]:
    """The connections whose ``local*.certs`` name ``cert_path`` (compared after symlinks)."""
    wanted = _resolve_real(Path(cert_path))
    names: list[str] = []
    for ref in cert_references(conf, swanctl_dir):
        if _resolve_real(ref.path) == wanted and ref.connection not in names:
            names.append(ref.connection)
    return tuple(names)
