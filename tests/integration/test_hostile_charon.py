"""Issue 11 with a real charon: attacks on the renewal never leave charon without its pair.

Gateway A (a real charon in a network namespace, see tests/charon_net.py) renews
through :class:`HostileProxy`, which attacks one renewal after another: a silent
CA, an answer whose messageTime overflows, an answer re-signed with B's
certificate (a man in the middle holding a certificate of the same CA), an
unprotected error. After each: ``swcmp renew`` failed within its bound, A's key
file, certificate file and the key charon holds are the same pair as before, and a
new IKE SA shows B the old serial. Then a clean run renews and B sees the new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from hostile_proxy import (
    HostileProxy,
    error_body,
    forge,
    genuine_body,
    hang,
    mutate,
    with_message_time,
)
from swcmp.cmp import keys
from swcmp.cmp.protection import SignatureProtection
from test_e2e_strongswan import (  # noqa: F401 - e2e is a fixture
    A_SESSION,
    E2E,
    assert_keys_in_step,
    e2e,
    enroll_a,
)

pytestmark = [pytest.mark.integration, pytest.mark.root]

TIMEOUT = 2
SLACK = 8.0


def _attacks(env: E2E) -> dict[str, Callable[[HostileProxy], None]]:
    ca_name = env.ca.ca_cert.subject.public_bytes()
    b_key = keys.load_private_key(env.b.key_file.read_bytes())
    as_b = SignatureProtection(key=b_key, cert=env.b.cert())

    return {
        "silent CA": lambda p: p.on("kur", hang()),
        "overflowing messageTime": lambda p: p.on(
            "kur", mutate(lambda b: with_message_time(b, b"99991231235959-1200"))),
        "signed with B's certificate": lambda p: p.on(
            "kur", forge(genuine_body, sender_der=env.b.cert().subject.public_bytes(),
                         protection=as_b)),
        "unprotected error": lambda p: p.on(
            "kur", forge(lambda ex: error_body("go away", 25), sender_der=ca_name)),
    }


def test_attacks_on_the_renewal_leave_charon_with_its_pair(e2e: E2E) -> None:  # noqa: F811
    old = enroll_a(e2e)
    with HostileProxy(e2e.ca.url) as proxy:
        e2e.a.run("session", "set", A_SESSION, "--server-url", proxy.url,
                  "--timeout", str(TIMEOUT))
        for label, arm in _attacks(e2e).items():
            arm(proxy)
            start = time.monotonic()
            res = e2e.a.run("renew", "--force", A_SESSION, code=1)
            took = time.monotonic() - start
            print(f"HOSTILE-CHARON {label}: refused in {took:.1f}s")
            assert took < TIMEOUT + SLACK, (label, took)
            assert "Traceback" not in res.stderr
            assert e2e.a.serial() == old.serial_number, label
            assert_keys_in_step(e2e)
            assert e2e.net.serial_b_saw_for_a() == old.serial_number, label
            status = e2e.a.status()
            assert status["state"] != "in_progress" and not status["last_result"]["ok"], label
        proxy.clear()
        e2e.a.run("renew", "--force", A_SESSION)
    new = e2e.a.serial()
    assert new != old.serial_number
    assert_keys_in_step(e2e)
    assert e2e.net.serial_b_saw_for_a() == new
