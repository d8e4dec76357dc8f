"""Text that came from the network, made safe to print."""

from __future__ import annotations


def safe(value: str) -> str:
    """``value`` with control characters (C0, DEL, C1) escaped as ``\\xNN``/``\\uNNNN``,
    so that a CA cannot move the cursor or recolour the operator's terminal."""
    out = []
    for ch in value:
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0 or ch in "\u2028\u2029\u202e":
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def safe_lines(value: str) -> str:
    """:func:`safe` for text of several lines: line breaks stay, every other control
    character is escaped (for whole outputs that may contain network text)."""
    return "\n".join(safe(line) for line in value.split("\n"))
