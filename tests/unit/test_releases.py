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
