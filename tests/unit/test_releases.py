"""Which charon releases close a replaced connection's IKE SAs without CHILD_SA."""

from __future__ import annotations

import pytest

from swcmp.strongswan.releases import closes_childless, release_of, replace_warning


@pytest.mark.parametrize(("version", "release", "closes"), [
    ("5.9.8", (5, 9), False),
    ("5.9.14", (5, 9), False),
    ("6.0.0rc1", (6, 0), True),
    ("6.0.1", (6, 0), True),
    ("6.1.0", (6, 1), True),
    ("10.0.0", (10, 0), True),
    ("", None, False),
    ("unknown", None, False),
])
def test_release_of_a_vici_version(version: str, release: tuple[int, int] | None,
                                   closes: bool) -> None:
    assert release_of(version) == release
    assert closes_childless(version) is closes


def test_the_warning_names_the_release_the_connections_and_the_way_out() -> None:
    text = replace_warning("6.0.1", ["gw", "gw2"])
    assert text.startswith("charon 6.0.1 (strongSwan 6.0 or later)")
    assert "replaces gw, gw2" in text and "no CHILD_SA" in text
    assert "identity mode keeps them all" in text


@pytest.mark.parametrize("version", [
    "9" * 5000 + ".0",  # more digits than int() reads: ValueError before the fix
    "6" * 20 + ".0.1",
    "\u0666.\u0660.1",  # ARABIC-INDIC digits: not a release charon names
])
def test_an_odd_or_hostile_version_is_an_unknown_release(version: str) -> None:
    assert release_of(version) is None
    assert closes_childless(version) is False


def test_the_warning_shows_charons_version_escaped_and_short() -> None:
    # charon's answer goes to the operator's terminal (session set) and to the log
    text = replace_warning("6.0.1\x1b]0;owned\x07\x1b[2J" + "x" * 10_000, ["gw\x1b[31m"])
    assert "\x1b" not in text and "\x07" not in text
    assert "charon 6.0.1\\x1b]0;owned\\x07" in text
    assert "replaces gw\\x1b[31m" in text
    assert len(text) < 600
