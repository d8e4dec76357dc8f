"""One key pair belongs to one session; key names are given without the .key suffix."""

from __future__ import annotations

from pathlib import Path

import pytest

from swcmp.errors import ConfigError
from swcmp.sessionfile import SessionStore


def test_a_key_cannot_belong_to_two_sessions(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.create("gw1", {"key": "gw1"})
    with pytest.raises(ConfigError, match="already belongs to session gw1"):
        store.create("gw2", {"key": "gw1"})
    assert store.names() == ("gw1",)  # nothing written
    store.create("gw2", {"key": "gw2"})
    with pytest.raises(ConfigError, match="already belongs to session gw1") as ei:
        store.update("gw2", set_values={"key": "gw1"})
    assert "--key gw2" in (ei.value.hint or "")
    assert store.load("gw2").key == "gw2"
    store.update("gw1", set_values={"key": "gw1"})  # its own key again: fine


@pytest.mark.parametrize("bad", ["gw1.key", "x.key"])
def test_key_name_without_suffix(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid key name"):
        SessionStore(tmp_path).create("gw1", {"key": bad})
