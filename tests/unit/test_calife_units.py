"""swcmp.calife without a CA: the schedule of the CA questions, reasons, state, status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from swcmp.calife import CaLifeState, CaLifeStore, reason_code, reason_name, status_rows
from swcmp.calife.state import CA_CERTS, CHECK_EVERY, CURRENT_CRL, ROOT_UPDATE, UNSUPPORTED_RETRY
from swcmp.errors import ConfigError
from swcmp.paths import Paths

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_questions_are_weekly_and_a_refusing_ca_waits_a_month() -> None:
    st = CaLifeState()
    assert st.due(CA_CERTS, NOW)  # never asked
    st.checked[CA_CERTS] = NOW.isoformat()
    assert not st.due(CA_CERTS, NOW + CHECK_EVERY - timedelta(seconds=1))
    assert st.due(CA_CERTS, NOW + CHECK_EVERY)
    st.unsupported[ROOT_UPDATE] = {"since": NOW.isoformat(), "error": "badRequest"}
    assert not st.due(ROOT_UPDATE, NOW + CHECK_EVERY)
    assert not st.due(ROOT_UPDATE, NOW + UNSUPPORTED_RETRY - timedelta(seconds=1))
    assert st.due(ROOT_UPDATE, NOW + UNSUPPORTED_RETRY)


def test_reasons_by_name_in_any_case() -> None:
    assert reason_code("superseded") == 4
    assert reason_code("KEYCOMPROMISE") == 1
    assert reason_name(5) == "cessationOfOperation"
    with pytest.raises(ConfigError) as e:
        reason_code("bored")
    assert "superseded" in (e.value.hint or "")


def test_damaged_state_starts_afresh_and_odd_fields_are_dropped(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "etc", tmp_path / "var", tmp_path / "swanctl")
    store = CaLifeStore(paths, "gw1")
    store.path.parent.mkdir(parents=True)
    store.path.write_text("{not json")
    assert store.load() == CaLifeState()
    store.path.write_text('{"checked": {"caCerts": 7, "rootCaCert": "2026-01-01T00:00:00"},'
                          ' "pending_revocations": ["x", {"serial": "1f"}], "crl": []}')
    st = store.load()
    assert st.checked == {"rootCaCert": "2026-01-01T00:00:00"}
    assert st.pending_revocations == [{"serial": "1f", "reason": 0, "attempts": 0}]
    assert st.crl is None
    with store.update() as st2:
        st2.unsupported[CURRENT_CRL] = {"since": NOW.isoformat(), "error": "none"}
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"
    assert CURRENT_CRL in store.load().unsupported


def test_status_rows_name_revocation_and_rollover() -> None:
    rows = dict(status_rows({
        "roots": [{"subject": "CN=R", "sha256": "ab" * 32, "not_after": "2030", "expired": False}],
        "rollover": {"state": "both roots trusted", "new": "cd" * 32, "old": "ab" * 32,
                     "taken": "2026", "old_not_after": "2030"},
        "current_revoked": {"serial": "1f", "reason": "keyCompromise", "time": "2026"},
        "unsupported": {"caCerts": {"since": "2026", "error": "badRequest"}},
        "pending_revocations": [], "crl": None}))
    assert rows["root rollover"].startswith("both roots trusted")
    assert "serial 1f was revoked (keyCompromise)" in rows["REVOKED"]
    assert "request initial" in rows["REVOKED"]
    assert rows["CA lacks"].startswith("caCerts")


def test_times_in_a_damaged_calife_json_never_stop_the_ca_questions_for_good() -> None:
    # a calife.json damaged (or written while the clock was years ahead) with a next
    # try, a last check or a refusal in 2099: the CA's certificates, root update and
    # CRL were never asked for again (a root rollover missed without a word)
    far = "2099-01-01T00:00:00+00:00"
    st = CaLifeState.from_json({
        "next_try": {CA_CERTS: far, CURRENT_CRL: far},
        "failures": {CA_CERTS: 1, CURRENT_CRL: 1},
        "checked": {ROOT_UPDATE: far},
        "unsupported": {CURRENT_CRL: {"since": far, "error": "badRequest"}},
    })
    assert not st.backing_off(CA_CERTS, NOW) and st.due(CA_CERTS, NOW)
    assert st.due(ROOT_UPDATE, NOW)
    assert not st.is_unsupported(CURRENT_CRL, NOW) and not st.backing_off(CURRENT_CRL, NOW)
    # a backoff within its bounds still holds
    st.failed(CA_CERTS, NOW, retry_after=10**9)
    assert st.backing_off(CA_CERTS, NOW + timedelta(hours=23))


def test_failinfo_that_refuses_the_message_is_told_from_one_that_refuses_the_question(
        ) -> None:
    """Only a refusal for what a genm asks marks the question unknown to the CA; one for
    how the message came (clock, signer, the CA down) does not."""
    from swcmp.cmp.errors import FAILURE_BIT, MESSAGE_FAILURES, CMPErrorResponse

    assert MESSAGE_FAILURES.issubset(FAILURE_BIT)
    for name in ("badTime", "signerNotTrusted", "systemUnavail", "badMessageCheck"):
        assert CMPErrorResponse(status="rejection", fail_info=(name,)).refuses_message
    for info in ((), ("badRequest",), ("badDataFormat",), ("addInfoNotAvailable",)):
        assert not CMPErrorResponse(status="rejection", fail_info=info).refuses_message
