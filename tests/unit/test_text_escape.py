"""CA text is printed escaped: no control a terminal or text viewer obeys gets through.

The bidirectional controls (embeddings and overrides U+202A-202E, isolates
U+2066-2069, the marks U+200E/U+200F) let a CA show a name or a phone number reversed
or hide part of it; the terminal text and the ``--json`` output must carry them escaped.
"""

from __future__ import annotations

import json

import pytest

from swcmp.cli.render import dump_json
from swcmp.cmp.text import safe, safe_lines

#: Written out here, not taken from swcmp: the test must fail if swcmp forgets one.
#: Unicode's Bidi_Control property: U+061C ARABIC LETTER MARK, U+200E/F, U+202A-202E,
#: U+2066-2069.
BIDI = [*(chr(c) for c in range(0x202A, 0x202F)), *(chr(c) for c in range(0x2066, 0x206A)),
        "\u200e", "\u200f", "\u061c"]
OTHER = ["\x1b", "\x07", "\x7f", "\x9b", "\u2028", "\u2029"]


@pytest.mark.parametrize("ch", BIDI + OTHER, ids=lambda c: f"U+{ord(c):04X}")
def test_a_control_is_escaped_in_terminal_text_and_in_json(ch: str) -> None:
    text = f"call +1-555-0100{ch}0010-555-1+ please"
    for shown in (safe(text), safe_lines(text), dump_json({"message": text})):
        assert ch not in shown, repr(shown)
    assert f"\\u{ord(ch):04x}" in safe(text) or f"\\x{ord(ch):02x}" in safe(text)
    # JSON still means the same string
    assert json.loads(dump_json({"message": text}))["message"] == text


def test_ordinary_unicode_stays_readable() -> None:
    text = "Zertifizierungsstelle Müller – 東京 עברית"
    assert safe(text) == text
    assert json.loads(dump_json({"m": text}))["m"] == text and text in dump_json({"m": text})
