"""Fuzzed state.json, calife.json and session files: read without an exception escaping.

Whatever bytes are in a session's state files, loading them and planning the session
must give a state (a damaged field dropped), never an exception that would end serve,
`status` or `renew --due`; a damaged session file is one error in the listing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pki import TestPKI
from swcmp.calife.state import CaLifeStore
from swcmp.cmp import keys
from swcmp.paths import Paths
from swcmp.policy import plan
from swcmp.session import Session
from swcmp.sessionfile import SessionStore
from swcmp.state import StateStore

NOW = datetime(2026, 12, 1, tzinfo=UTC)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=30) | st.sampled_from(["soon", "2026-13-01", "2026-12-01T00:00:00",
                                              "2026-12-01T00:00:00+00:00", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["state", "failures", "next_attempt", "received", "last_result",
                         "stats", "renewals", "renewal_failures", "serial", "time", "checked",
                         "unsupported", "next_try", "crl", "rollover", "pending_revocations",
                         "revoked", "last_error", "ir", "sent"]) | st.text(max_size=8),
        inner, max_size=8),
    max_leaves=30)
_files = st.one_of(_json.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200))
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(state=_files, calife=_files)
def test_damaged_state_files_never_raise(tmp_path: Path, pki: TestPKI, state: bytes,
                                         calife: bytes) -> None:
    paths = Paths(tmp_path / "etc", tmp_path / "var", tmp_path / "swanctl")
    d = paths.session_state_dir("gw1")
    d.mkdir(parents=True, exist_ok=True)
    (d / "state.json").write_bytes(state)
    (d / "calife.json").write_bytes(calife)
    cert = pki.issue(keys.generate_key("ecdsa:p256"))
    st_ = StateStore(paths).load("gw1")
    for s in (Session(name="gw1", key="gw1", auto_update=True),  # type: ignore[arg-type]
              Session(name="gw1", key="gw1")):  # type: ignore[arg-type]
        plan(s, cert, st_, NOW)
        plan(s, None, st_, NOW)
    life = CaLifeStore(paths, "gw1").load()
    for q in ("caCerts", "rootCaCert", "currentCRL"):
        life.due(q, NOW)
        life.failed(q, NOW, None)


@SETTINGS
@given(text=st.binary(max_size=300))
def test_a_damaged_session_file_is_one_error_in_the_listing(tmp_path: Path,
                                                            text: bytes) -> None:
    store = SessionStore(tmp_path / "etc")
    if not store.path_for("ok").exists():
        store.create("ok", {})
    (store.sessions_dir / "broken.toml").write_bytes(text)
    listing = store.list()
    names = [s.name for s in listing.sessions]
    assert "ok" in names
    assert ("broken" in names) != any(Path(e.path).stem == "broken" for e in listing.errors)
