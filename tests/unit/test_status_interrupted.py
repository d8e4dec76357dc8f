"""`swcmp status` on an interrupted renewal names the command that finishes it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from swcmp.paths import Paths
from swcmp.session import Session
from swcmp.status import session_status
from swcmp.store import Journal


@pytest.mark.parametrize("auto_update", [False, True])
@pytest.mark.parametrize(("phase", "state"), [("waiting", "polling"),
                                              ("confirmed", "in_progress")])
def test_an_interrupted_renewal_names_request_keyupdate(
        tmp_path: Path, auto_update: bool, phase: str, state: str) -> None:
    paths = Paths(config_dir=tmp_path / "etc", state_dir=tmp_path / "state",
                  swanctl_dir=tmp_path / "swanctl")
    Journal(paths, "gw1").write(phase=phase, kind="kur", transaction_id="ab" * 16)
    s = Session(name="gw1", auto_update=auto_update)
    out = session_status(paths, s, datetime.now(UTC), None)
    assert out["state"] == state
    # with auto-update off no pass of serve or `swcmp renew` ever finishes it: the
    # reason must say so and name the command that does
    assert "`swcmp request keyupdate gw1`" in out["reason"], out["reason"]
    assert ("auto-update is off" in out["reason"]) is not auto_update
