"""Text that came from the network, made safe to print."""

from __future__ import annotations

#: Characters outside C0/C1 that a terminal or a text viewer obeys: the line and
#: paragraph separators, and the bidirectional formatting controls (embeddings and
#: overrides U+202A-202E, isolates U+2066-2069, the marks U+200E/U+200F and U+061C:
#: Unicode's Bidi_Control property), with which a
#: CA could show a name reversed or hide part of it.
INVISIBLE_CONTROLS = (
    "\u2028\u2029"
    "\u202a\u202b\u202c\u202d\u202e"
    "\u2066\u2067\u2068\u2069"
    "\u200e\u200f\u061c"
)


def safe(value: str) -> str:
    """``value`` with control characters (C0, DEL, C1, and the separators and
    bidirectional controls of :data:`INVISIBLE_CONTROLS`) escaped as
    ``\\xNN``/``\\uNNNN``, so that a CA cannot move the cursor, recolour the
    operator's terminal or reorder the text shown."""
    out = []
    for ch in value:
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0 or ch in INVISIBLE_CONTROLS:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def safe_lines(value: str) -> str:
    """:func:`safe` for text of several lines: line breaks stay, every other control
    character is escaped (for whole outputs that may contain network text)."""
    return "\n".join(safe(line) for line in value.split("\n"))
