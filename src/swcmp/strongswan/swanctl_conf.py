"""swanctl.conf in strongSwan's settings syntax, parsed as swanctl parses it.

This module is pure (no :mod:`vici`, no sockets); :mod:`swcmp.strongswan.load_conn`
builds the ``load-conn`` messages from the tree. It follows
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
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from swcmp.errors import ConfigError

__all__ = [
    "ConfSection",
    "ConfSyntaxError",
    "ConfValue",
    "parse_file",
    "parse_string",
]

log = logging.getLogger(__name__)

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
