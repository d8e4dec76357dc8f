"""The contract every key store (swcmp.keystore.KeyStore) passes.

One suite, inherited by each backend's test class (as python keyring's backend tests
are): FileKeys and an in-memory fake in tests/unit/test_keystore_contract.py, TokenKeys
on SoftHSM2 in tests/integration/test_keystore_token.py. A backend is right when it
passes the suite; an operation a backend leaves out fails it.

A test class provides ``harness`` (a :class:`Harness` subclass for its backend).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509

from pki import TestPKI
from swcmp.checkresult import FAIL
from swcmp.cmp import certs, keys
from swcmp.keystore import KeyStore
from swcmp.paths import Paths
from swcmp.session import Session
from swcmp.store import Journal, JournalEntry, write_cert


@dataclass
class Harness:
    """One backend under test: its store, and what the suite cannot ask the protocol."""

    store: KeyStore
    session: Session
    paths: Paths
    pki: TestPKI
    opened: Callable[[], KeyStore]  # the store as a later run opens it
    serials: list[int] = field(default_factory=lambda: [100])
    #: collect() forgets a replaced key nobody needs (else it keeps a bounded archive)
    collect_forgets: bool = True

    def issue(self, key: keys.SigningKey) -> x509.Certificate:
        self.serials.append(self.serials[-1] + 1)
        return self.pki.issue(keys.public_key_of(key), cn="gw1.example.net",
                              serial=self.serials[-1])

    def commit_enrolment(self, cert: x509.Certificate) -> None:
        """What an IR does after the CA answered: the certificate goes live."""
        write_cert(self.paths, self.session, cert)
        self.store.enrolled()

    def key_count(self) -> int:
        """How many private keys the backend holds (live, staged and replaced)."""
        raise NotImplementedError

    def lose_live_key(self) -> None:
        """The live key disappears behind swcmp's back (a reset token, a deleted file)."""
        raise NotImplementedError


def _spki(key: keys.SigningKey | None) -> bytes | None:
    return keys.spki_der(key) if key is not None else None


def enrolled(h: Harness) -> x509.Certificate:
    key, new = h.store.ensure_key()
    assert new
    cert = h.issue(key)
    h.commit_enrolment(cert)
    return cert


def staged(h: Harness) -> tuple[Journal, JournalEntry, keys.SigningKey]:
    """A key update's new key, made and journaled as the renewal does."""
    j = Journal(h.paths, h.session.name)
    entry = j.write(phase="key-making", **h.store.reserve(), regenerate=True)
    key = h.store.make_staged(j, entry)
    return j, j.write(phase="key-ready"), key


def installed(h: Harness) -> tuple[x509.Certificate, x509.Certificate, keys.SigningKey]:
    """(old certificate, new certificate, new key) after a key update's install."""
    old = enrolled(h)
    j, _, key = staged(h)
    new = h.issue(key)
    j.stage_cert(new, [])
    steps: list[str] = []
    h.store.install(j, new, steps.append)
    return old, new, key


class KeyStoreContract:
    """The suite; a subclass defines the ``harness`` fixture."""

    # -- make

    def test_make_a_key_for_an_initial_request(self, harness: Harness) -> None:
        h = harness
        assert h.store.live_key() is None and h.store.live_pair() is None
        key, new = h.store.ensure_key()
        assert new and _spki(h.opened().live_key()) == _spki(key)
        again, new_again = h.opened().ensure_key()
        assert not new_again and _spki(again) == _spki(key)
        cert = h.issue(key)
        h.commit_enrolment(cert)
        pair = h.opened().live_pair()
        assert pair is not None and pair.cert_pem == certs.pem_of(cert)
        assert h.key_count() == 1

    # -- stage, crash and recover

    def test_stage_a_new_key_beside_the_live_one(self, harness: Harness) -> None:
        h = harness
        enrolled(h)
        live = h.store.live_key()
        j, entry, key = staged(h)
        assert _spki(key) != _spki(live)
        assert h.store.has_staged(j, entry)
        assert _spki(h.opened().live_key()) == _spki(live)  # staged is not live
        assert h.key_count() == 2

    def test_a_staged_key_survives_a_crash(self, harness: Harness) -> None:
        h = harness
        enrolled(h)
        j, entry, key = staged(h)
        found, going_on = h.opened().recover(j, entry)
        assert _spki(found) == _spki(key) and going_on == entry

    @pytest.mark.parametrize("made", [False, True], ids=["before-make", "while-making"])
    def test_a_crash_while_the_key_is_made_leaves_nothing(self, harness: Harness,
                                                          made: bool) -> None:
        h = harness
        enrolled(h)
        j = Journal(h.paths, h.session.name)
        entry = j.write(phase="key-making", **h.store.reserve(), regenerate=True)
        if made:
            h.store.make_staged(j, entry)  # made, and killed before "key-ready"
        found, going_on = h.opened().recover(j, entry)
        assert found is None and going_on is None and j.load() is None
        assert h.key_count() == 1

    def test_no_staged_key_without_a_new_one(self, harness: Harness) -> None:
        h = harness
        enrolled(h)
        j = Journal(h.paths, h.session.name)
        entry = j.write(phase="waiting", transaction_id="01", server_nonce="02")
        assert not h.store.has_staged(j, entry)
        assert h.opened().recover(j, entry) == (None, entry)

    # -- install and undo

    def test_install_makes_the_new_pair_live_and_keeps_the_old_reachable(
            self, harness: Harness) -> None:
        h = harness
        old = enrolled(h)
        j, _, key = staged(h)
        new = h.issue(key)
        j.stage_cert(new, [])
        steps: list[str] = []
        done = h.store.install(j, new, steps.append)
        assert steps, "install reports its steps to the test hook"
        assert done.previous is not None and done.previous.cert_pem == certs.pem_of(old)
        assert done.replaced_serial == old.serial_number
        later = h.opened()
        assert _spki(later.live_key()) == _spki(key)
        pair = later.live_pair()
        assert pair is not None and pair.cert_pem == certs.pem_of(new)
        assert _spki(later.key_for(old)) == certs.spki_of(old)

    def test_install_again_after_a_crash_is_the_same_install(self, harness: Harness) -> None:
        h = harness
        old, new, key = installed(h)
        j = Journal(h.paths, h.session.name)
        h.opened().install(j, new, lambda step: None)
        later = h.opened()
        assert _spki(later.live_key()) == _spki(key)
        assert _spki(later.key_for(old)) == certs.spki_of(old)

    def test_a_staged_key_that_does_not_match_is_refused(self, harness: Harness) -> None:
        h = harness
        enrolled(h)
        live = h.store.live_key()
        j, _, _ = staged(h)
        stray = keys.generate_key("ecdsa:p256")
        with pytest.raises(Exception, match="key"):
            h.store.install(j, h.issue(stray), lambda step: None)
        assert _spki(h.opened().live_key()) == _spki(live)

    def test_undo_puts_the_previous_pair_back(self, harness: Harness) -> None:
        h = harness
        old = enrolled(h)
        live = h.store.live_key()
        j, _, key = staged(h)
        new = h.issue(key)
        j.stage_cert(new, [])
        done = h.store.install(j, new, lambda step: None)
        h.store.undo(done)
        later = h.opened()
        assert _spki(later.live_key()) == _spki(live)
        pair = later.live_pair()
        assert pair is not None and pair.cert_pem == certs.pem_of(old)

    # -- collect

    def test_collect_keeps_what_charon_holds_and_what_a_revocation_needs(
            self, harness: Harness) -> None:
        h = harness
        old, _, key = installed(h)
        h.opened().collect(None, keep_serials={old.serial_number})
        assert _spki(h.opened().key_for(old)) == certs.spki_of(old)
        h.opened().collect(lambda: _charon_ids(old))
        assert _spki(h.opened().key_for(old)) == certs.spki_of(old)
        unknown = h.opened()

        def charon_down() -> set[str]:
            from swcmp.deploy import DeployUnavailable

            raise DeployUnavailable("charon is not running")

        unknown.collect(charon_down)
        assert _spki(h.opened().key_for(old)) == certs.spki_of(old)
        h.opened().collect(None)  # no charon on this host, no revocation waiting
        later = h.opened()
        assert _spki(later.live_key()) == _spki(key)
        assert later.collects == h.collect_forgets  # what a pass asks before the lock
        if h.collect_forgets:
            assert later.key_for(old) is None
        else:  # kept (bounded) where charon never loads it: a file archive
            assert _spki(later.key_for(old)) == certs.spki_of(old)

    def test_collect_never_takes_the_live_or_a_staged_key(self, harness: Harness) -> None:
        h = harness
        installed(h)
        live = h.store.live_key()
        j, entry, key = staged(h)
        h.opened().collect(None)
        later = h.opened()
        assert _spki(later.live_key()) == _spki(live)
        assert _spki(later.recover(j, entry)[0]) == _spki(key)

    # -- revoke the superseded certificate

    def test_the_key_of_the_superseded_certificate_signs_its_revocation(
            self, harness: Harness) -> None:
        h = harness
        old, new, _ = installed(h)
        signer = h.opened().key_for(old)
        assert signer is not None
        from swcmp.cmp.keys import default_signature_algorithm, sign, verify

        alg = default_signature_algorithm(signer)
        verify(old.public_key(), alg, sign(signer, alg, b"rr"), b"rr")
        assert _spki(h.opened().key_for(new)) == certs.spki_of(new)
        stranger = h.pki.issue(keys.generate_key("ecdsa:p256").public_key(), serial=9999)
        assert h.opened().key_for(stranger) is None

    # -- checks

    def test_checks_pass_for_an_enrolled_store_and_fail_without_its_key(
            self, harness: Harness) -> None:
        h = harness
        enrolled(h)
        results = h.opened().checks()
        assert results and all(r.level != FAIL for r in results), results
        h.lose_live_key()
        results = h.opened().checks()
        assert any(r.level == FAIL for r in results), results


def _charon_ids(cert: x509.Certificate) -> set[str]:
    """charon's key id of ``cert``'s key (what get-keys lists for it)."""
    return {keys.subject_key_id(cert.public_key()).hex()}  # type: ignore[arg-type]


def tmp_paths(root: Path) -> Paths:
    return Paths(root / "etc", root / "var", root / "swanctl")
