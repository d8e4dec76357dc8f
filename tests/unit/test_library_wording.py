"""The CMP library says what to change in its own words and names the setting as data;
only the application names commands and options (session.hint_for)."""

from __future__ import annotations

import re
from pathlib import Path

import swcmp.cmp

LIB = Path(swcmp.cmp.__file__).parent
HINT = re.compile(r"(?:with_hint\(|hint=)\s*\(?((?:\s*f?\"[^\"]*\"\s*)+)", re.S)


def test_no_library_hint_names_a_cli_option_or_command() -> None:
    found = []
    for path in sorted(LIB.glob("*.py")):
        for m in HINT.finditer(path.read_text()):
            text = "".join(re.findall(r"\"([^\"]*)\"", m.group(1)))
            if re.search(r"--[a-z]|swcmp (session|request|renew|serve|hook|status|stats)\b", text):
                found.append(f"{path.name}: {text}")
    assert found == []


def test_the_wording_check_sees_hints() -> None:
    sample = 'raise E("x").with_hint("pin it with "\n    "--server-cert FILE")'
    texts = ["".join(re.findall(r"\"([^\"]*)\"", m.group(1))) for m in HINT.finditer(sample)]
    assert texts == ["pin it with --server-cert FILE"]
