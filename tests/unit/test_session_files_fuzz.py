"""Fuzzed per-session files through serve's pass and `status`: a damaged renewal journal,
calife.json, state.json or session file (its newer settings too: renew_with, poll_limit,
operation_urls, ask_template) is that session's failure, never the pass's.

Two sessions: ``ok`` and ``gw1``, whose files are fuzzed. The pass (``run_pass``, what
serve runs) must end, report both sessions (``gw1`` failed when its journal or session
file is damaged), write metrics naming both, and ``status`` must describe every session
it lists.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pki import TestPKI, pem_cert
from swcmp.calife.state import CaLifeStore
from swcmp.cmp import keys
from swcmp.paths import Paths
from swcmp.renewal import damaged_journal
from swcmp.service import HostConfig, RenewalService
from swcmp.sessionfile import SessionStore
from swcmp.state import StateStore
from swcmp.status import session_status
from swcmp.store import Journal

#: nothing listens there: whatever the pass asks fails at once
URL = "http://127.0.0.1:9/pkix/"
_odd = st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | \
    st.floats(allow_nan=False) | st.text(max_size=20) | st.sampled_from([
        "waiting", "received", "sending", "confirmed", "committing", "key-ready", "kur", "cr",
        "p10cr", "00ff", "", "soon", "9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+00:00",
        "2026-12-01T00:00:00", "http://127.0.0.1:9/x", "kur=http://127.0.0.1:9/kur",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
_value = st.recursive(_odd, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
_JOURNAL_KEYS = ["phase", "kind", "old_serial", "started", "regenerate", "transaction_id",
                 "server_nonce", "cert_req_id", "cert", "confirm_nonce", "token_id",
                 "token_old", "old_cert_pem", "url", "url_per_body", "tx_started", "resumes"]
_journal = st.one_of(
    st.fixed_dictionaries({"phase": st.sampled_from(["waiting", "received", "sending",
                                                     "key-ready", "confirmed"]),
                           "transaction_id": st.just("00ff"), "server_nonce": st.just("ab")},
                          optional={k: _value for k in _JOURNAL_KEYS if k not in (
                              "phase", "transaction_id", "server_nonce")}
                          ).map(lambda d: json.dumps(d).encode()),
    _value.map(lambda v: json.dumps(v).encode()), st.binary(max_size=120))
_STATE_KEYS = ["state", "failures", "next_attempt", "received", "last_result", "stats",
               "checked", "unsupported", "next_try", "crl", "rollover", "pending_revocations",
               "revoked", "last_error", "failures"]
_state = st.one_of(st.dictionaries(st.sampled_from(_STATE_KEYS), _value, max_size=6)
                   .map(lambda d: json.dumps(d).encode()), st.binary(max_size=120))


def _toml_value(v: object) -> str:
    return json.dumps(v) if not isinstance(v, dict) else "{}"


_SETTINGS_FUZZED = ["renew_with", "poll_limit", "operation_urls", "ask_template",
                    "operation_paths", "timeout", "expire_time", "server_url"]
_toml_edits = st.dictionaries(st.sampled_from(_SETTINGS_FUZZED),
                              _odd | st.lists(_odd, max_size=2), max_size=3)
SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _site(root: Path, pki: TestPKI) -> Paths:
    paths = Paths(root / "etc", root / "var", root / "swanctl")
    store = SessionStore(paths.config_dir)
    paths.x509_dir.mkdir(parents=True)
    for name in ("ok", "gw1"):
        store.create(name, {"entity": f"/CN={name}", "ca_name": "/CN=swcmp Test Root CA",
                            "key": name, "auto_update": True,
                            "server_url": URL,
                            "timeout": 1, "renew_with": "cr", "poll_limit": "2h",
                            "ask_template": True,
                            "operation_urls": [f"keyupdate={URL}kur"],
                            "expire_time": 50})
        paths.cert_file(name).write_bytes(pem_cert(pki.gw))
        paths.private_dir.mkdir(mode=0o700, exist_ok=True)
        paths.key_file(name).write_bytes(keys.private_key_pem(pki.gw_key))
        paths.key_file(name).chmod(0o600)
    return paths


def _edit_toml(path: Path, edits: dict[str, object]) -> None:
    lines = path.read_text().splitlines()
    for key, value in edits.items():
        lines = [f"{key} = {_toml_value(value)}" if ln.startswith(f"{key} = ") else ln
                 for ln in lines]
    path.write_text("\n".join(lines) + "\n")


@SETTINGS
@example(journal=json.dumps({  # a start no run wrote: its poll limit's end overflowed status
    "phase": "waiting", "kind": "kur", "transaction_id": "00ff", "server_nonce": "ab",
    "tx_started": "9999-12-31T23:59:59+00:00"}).encode(), state=None, calife=None, edits={})
@given(journal=st.none() | _journal, state=st.none() | _state, calife=st.none() | _state,
       edits=_toml_edits)
def test_damaged_files_of_one_session_never_end_the_pass_or_status(
        pki: TestPKI, journal: bytes | None, state: bytes | None, calife: bytes | None,
        edits: dict[str, object]) -> None:
    root = Path(tempfile.mkdtemp(prefix="swcmp-fuzz-"))
    try:
        paths = _site(root, pki)
        d = paths.session_state_dir("gw1")
        d.mkdir(parents=True, exist_ok=True)
        if journal is not None:
            Journal(paths, "gw1").path.write_bytes(journal)
        if state is not None:
            StateStore(paths).path("gw1").write_bytes(state)
        if calife is not None:
            CaLifeStore(paths, "gw1").path.write_bytes(calife)
        store = SessionStore(paths.config_dir)
        _edit_toml(store.path_for("gw1"), edits)
        prom = root / "metrics" / "swcmp.prom"
        # a quarter of the validity left: both are due, the renewals read the journals
        now = pki.gw.not_valid_after_utc - (pki.gw.not_valid_after_utc
                                            - pki.gw.not_valid_before_utc) / 4
        svc = RenewalService(paths, clock=lambda: now, host=HostConfig(metrics_file=prom))
        reports = {r.session: r for r in svc.run_pass()}
        assert set(reports) == {"ok", "gw1"}, reports
        listing = store.list()
        broken_toml = any(Path(e.path).stem == "gw1" for e in listing.errors)
        if broken_toml or damaged_journal(paths, "gw1") is not None:
            assert reports["gw1"].result == "failed", reports["gw1"]
        text = prom.read_text()
        for name in ("ok", "gw1"):
            assert f'session="{name}"' in text, name
        for s in listing.sessions:
            session_status(paths, s, now, None)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("phase", ["confirmed", "committing"])
def test_a_journal_whose_staged_certificate_is_gone_fails_once_then_is_cleared(
        tmp_path: Path, pki: TestPKI, phase: str) -> None:
    """A confirmed renewal whose staged certificate is gone (a run killed while it cleared
    the journal after the commit, or a hand deletion) cannot be finished: the run says so
    and clears the journal, instead of failing on it every run for ever."""
    paths = _site(tmp_path, pki)
    j = Journal(paths, "gw1")
    j.dir.mkdir(parents=True, exist_ok=True)
    j.path.write_text(json.dumps({"phase": phase, "kind": "kur"}))
    live = paths.cert_file("gw1").read_bytes(), paths.key_file("gw1").read_bytes()
    svc = RenewalService(paths)  # now: gw1 is not due, only its journal makes it run
    first = {r.session: r for r in svc.run_pass()}
    assert first["gw1"].result == "failed", first["gw1"]
    assert "staged certificate" in first["gw1"].message and "is gone" in first["gw1"].message
    assert not j.path.exists()
    second = {r.session: r for r in svc.run_pass()}
    assert second["gw1"].result == "skipped", second["gw1"]
    assert (paths.cert_file("gw1").read_bytes(), paths.key_file("gw1").read_bytes()) == live
