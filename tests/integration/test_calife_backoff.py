"""A failing CA is not asked the CA-life questions every serve pass.

The CA answers every request with HTTP 500 (or 503 with Retry-After). serve's CA-life
pass (``CaLife.maintain``) runs every minute of a simulated day (the clock is passed
in); each question is asked again only after its persisted backoff (1 h doubling to a
day, or the CA's longer Retry-After), and the failure count goes up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pki import make_pki
from renewal_env import make_gateway
from swcmp.calife import CaLife, CaLifeStore
from swcmp.calife.state import CA_CERTS, CRL_STATUS_LIST, CURRENT_CRL, ROOT_UPDATE

pytestmark = pytest.mark.integration


class FailingCA:
    """An HTTP server that answers every POST with ``status`` and counts them."""

    def __init__(self, status: int, retry_after: str | None = None) -> None:
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.requests += 1
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(status)
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/pkix/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def failing_500() -> Iterator[FailingCA]:
    ca = FailingCA(500)
    yield ca
    ca.close()


def _a_day_of_passes(tmp_path: Path, url: str) -> tuple[int, CaLifeStore, list[datetime]]:
    pki = make_pki(tmp_path / "pki")
    gw = make_gateway(tmp_path / "gw", pki, url)
    now = [datetime(2026, 12, 1, tzinfo=UTC)]
    life = CaLife(gw.paths, clock=lambda: now[0])
    store = CaLifeStore(gw.paths, "gw1")
    failures_seen: list[datetime] = []
    for _minute in range(24 * 60):
        life.maintain(gw.session)
        nd = life.next_due(gw.session)
        assert nd is not None
        failures_seen.append(nd)
        now[0] += timedelta(minutes=1)
    return 0, store, failures_seen


def test_a_ca_answering_500_is_asked_a_few_times_a_day_not_every_minute(
        tmp_path: Path, failing_500: FailingCA) -> None:
    _, store, next_due = _a_day_of_passes(tmp_path, failing_500.url)
    st = store.load()
    # 1 h, 2 h, 4 h, 8 h after the first failure: 5 attempts in the first day, and one
    # request each (a CA that cannot be reached is not asked the next question)
    print(f"requests in a day: {failing_500.requests}, failures: {st.failures}")
    assert failing_500.requests <= 6, failing_500.requests
    assert sum(st.failures.values()) >= 3, st.failures
    assert max(st.failures.values()) >= 4, st.failures
    assert set(st.failures) <= {CA_CERTS, ROOT_UPDATE, CURRENT_CRL}
    assert all(q in st.next_try for q in st.failures)
    assert "HTTP 500" in " ".join(st.last_error.values())
    # serve is told to come back at the next try, not in a minute
    assert next_due[0] - datetime(2026, 12, 1, tzinfo=UTC) >= timedelta(minutes=59)


def test_a_failing_crl_question_alone_backs_off_too(tmp_path: Path,
                                                   failing_500: FailingCA) -> None:
    """The CA certificates and root were asked lately, only the CRL is due: the CRL is asked
    by crlStatusList first, and its failures back the CRL off (asked every pass before)."""
    pki = make_pki(tmp_path / "pki")
    gw = make_gateway(tmp_path / "gw", pki, failing_500.url)
    start = datetime(2026, 12, 1, tzinfo=UTC)
    with CaLifeStore(gw.paths, "gw1").update() as st:
        st.checked = dict.fromkeys((CA_CERTS, ROOT_UPDATE), start.isoformat())
    now = [start]
    life = CaLife(gw.paths, clock=lambda: now[0])
    for _minute in range(0, 24 * 60, 5):
        life.maintain(gw.session)
        now[0] += timedelta(minutes=5)
    st = CaLifeStore(gw.paths, "gw1").load()
    print(f"requests in a day: {failing_500.requests}, failures: {st.failures}")
    assert 3 <= failing_500.requests <= 6, failing_500.requests
    assert st.failures.get(CRL_STATUS_LIST, 0) >= 3, st.failures


def test_a_longer_retry_after_is_honoured(tmp_path: Path) -> None:
    ca = FailingCA(503, retry_after="43200")  # 12 hours
    try:
        _, store, _ = _a_day_of_passes(tmp_path, ca.url)
    finally:
        ca.close()
    st = store.load()
    assert ca.requests <= 3 * 2, ca.requests  # at the start, and 12 h later
    assert max(st.failures.values()) <= 2


def test_a_failing_ca_life_question_is_a_metric_series_that_stays(
        tmp_path: Path, failing_500: FailingCA) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from swcmp.service import HostConfig, RenewalService

    pki = make_pki(tmp_path / "pki")
    gw = make_gateway(tmp_path / "gw", pki, failing_500.url)
    prom = tmp_path / "textfile" / "swcmp.prom"
    svc = RenewalService(gw.paths, host=HostConfig(metrics_file=prom))

    def series() -> dict[tuple[str, str], float]:
        return {(s.name, s.labels["question"]): float(s.value)
                for f in text_string_to_metric_families(prom.read_text())
                for s in f.samples if s.name.startswith("swcmp_ca_life_")
                and s.labels.get("session") == "gw1"}

    # healthy (never asked): present, at 0
    svc.write_metrics()
    healthy = series()
    for q in (CA_CERTS, ROOT_UPDATE, CURRENT_CRL):
        assert healthy[("swcmp_ca_life_consecutive_failures", q)] == 0
        assert healthy[("swcmp_ca_life_next_try_timestamp_seconds", q)] == 0
    start = datetime(2026, 12, 1, tzinfo=UTC)
    now = [start]
    life = CaLife(gw.paths, clock=lambda: now[0])
    for _hour in range(4):  # asked at 0 h and 1 h (then backed off to 3 h): 2 failures
        life.maintain(gw.session)
        now[0] += timedelta(hours=1)
        svc.write_metrics()
    st = CaLifeStore(gw.paths, "gw1").load()
    found = series()
    for q, n in st.failures.items():
        assert n >= 2
        assert found[("swcmp_ca_life_consecutive_failures", q)] == n
        next_try = datetime.fromisoformat(st.next_try[q])
        assert found[("swcmp_ca_life_next_try_timestamp_seconds", q)] == \
            int(next_try.timestamp())
        assert next_try > start + timedelta(hours=1)
    # every question keeps its series, failing or not, across rewrites
    assert {q for _, q in found} >= {CA_CERTS, ROOT_UPDATE, CURRENT_CRL}
    svc.refresh_metrics()
    assert series() == found


@pytest.mark.parametrize(("fail_info", "unsupported"), [(25, False), (24, False), (2, True)])
def test_a_ca_that_cannot_answer_now_is_a_failure_not_a_question_it_does_not_know(
        tmp_path: Path, fail_info: int, unsupported: bool) -> None:
    """The CA answers every CA-life question with a protected error. systemFailure and
    systemUnavail say "not now": a failure that backs off and is counted (the metric
    SwcmpCALifeFailing reads), not "unsupported" for a month with nothing counted; any
    other failInfo (badRequest) says the CA does not know the question."""
    from hostile_proxy import HostileProxy, error_body, forge
    from swcmp.cmp.protection import SignatureProtection
    from swcmp.testca import TestCA
    from testca_site import add_session, ca_config, make_site

    with TestCA(tmp_path / "ca", config=ca_config()) as ca, HostileProxy(ca.url) as proxy:
        site = make_site(tmp_path / "gw")
        add_session(site, ca, "gw1")
        site.store.update("gw1", set_values={"server_url": proxy.url})
        auth = ca.engine.authority
        proxy.on("genm", forge(lambda ex: error_body("cannot answer", fail_info),
                               sender_der=ca.ca_cert.subject.public_bytes(),
                               protection=SignatureProtection(key=auth.key, cert=auth.cert)),
                 times=None)
        life = CaLife(site.paths)
        life.maintain(site.session("gw1"))
        st = CaLifeStore(site.paths, "gw1").load()
        asked = proxy.kinds().count("genm")
        assert asked >= 1
        if unsupported:
            assert st.unsupported and not st.failures, st
        else:
            assert not st.unsupported, st.unsupported
            assert st.failures and all(q in st.next_try for q in st.failures), st
            life.maintain(site.session("gw1"))  # within the backoff: not asked again
            assert proxy.kinds().count("genm") == asked
