"""Audit: a manual IR/CR must not race a renewal of the same session.

`swcmp request certificate` loaded the live key, and wrote the certificate the
CA issued for it over x509/NAME.crt without the session lock, so a renewal
with a new key committing in between (swcmp serve, the timer) left the new
key beside a certificate for the old one: no matching pair in storage.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from swcmp import fsutil
from swcmp.cmp.transport import HttpTransport
from swcmp.enroll import request_certificate
from swcmp.errors import LockHeldError
from swcmp.renewal import Renewer
from testca_site import CAHolder, Site, add_session, ca_config, make_site


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path / "gw")


@pytest.fixture
def ca(tmp_path: Path) -> Iterator[CAHolder]:
    holder = CAHolder(tmp_path / "ca", ca_config())
    try:
        yield holder
    finally:
        holder.stop()


def test_renewal_during_a_manual_cr_cannot_break_the_pair(site: Site, ca: CAHolder) -> None:
    add_session(site, ca.ca, regenerate=True)
    seen: list[BaseException | str] = []

    class RenewWhileOnTheWire:
        """The service renews the session while the manual CR is in flight."""

        def __init__(self) -> None:
            self.inner = HttpTransport(ca.ca.url, total_timeout=20)
            self.posts = 0

        def post(self, data: bytes) -> bytes:
            self.posts += 1
            if self.posts == 1:
                try:
                    seen.append(Renewer(site.paths).renew(site.session(), regenerate=True)
                                .message)
                except LockHeldError as e:
                    seen.append(e)
            return self.inner.post(data)

        def end_transaction(self) -> None:
            self.inner.end_transaction()

        def close(self) -> None:
            self.inner.close()

    out = request_certificate(site.session(), site.paths, store=site.store,
                              transport=RenewWhileOnTheWire())
    assert out.ok
    assert site.pair_ok(), f"live key and certificate do not match (renewal: {seen})"
    assert len(seen) == 1 and isinstance(seen[0], LockHeldError)


def test_manual_request_refused_while_a_renewal_holds_the_lock(site: Site, ca: CAHolder) -> None:
    add_session(site, ca.ca)
    before = site.cert()
    with fsutil.exclusive_lock(site.paths.lock_dir, "gw1"):
        try:
            request_certificate(site.session(), site.paths, store=site.store)
        except LockHeldError:
            pass
        else:
            raise AssertionError("a CR ran while the session was locked")
    assert site.cert() == before and site.pair_ok()
