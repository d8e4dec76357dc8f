"""The key store contract (tests/keystore_contract.py) for keys in a PKCS#11 token:
TokenKeys on a SoftHSM2 token (tests/softhsm.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

import softhsm
from keystore_contract import Harness, KeyStoreContract, tmp_paths
from pki import make_pki
from swcmp.cmp import keys
from swcmp.keystore.token import TokenKeys
from swcmp.session import Session

_UNAVAILABLE = softhsm.unavailable()
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")]


class TokenHarness(Harness):
    token: softhsm.Token

    def key_count(self) -> int:
        return len(self.token.key_ids())

    def lose_live_key(self) -> None:
        for kid in self.token.key_ids():
            assert isinstance(self.store, TokenKeys)
            self.store.store.destroy(kid)


class TestTokenKeys(KeyStoreContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> Harness:
        token = softhsm.new_token(tmp_path)
        paths = tmp_paths(tmp_path / "gw")
        session = Session(name="gw1", key=token.uri(), pkcs11_module=token.module,
                          pin_file=token.pin_file)
        h = TokenHarness(TokenKeys(session, paths), session, paths, make_pki(tmp_path / "pki"),
                         lambda: TokenKeys(session, paths))
        h.token = token
        return h


def test_one_store_reads_the_pin_file_once(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from swcmp.keystore import pkcs11

    token = softhsm.new_token(tmp_path)
    session = Session(name="gw1", key=token.uri(), pkcs11_module=token.module,
                      pin_file=token.pin_file)
    reads: list[Path] = []
    real = pkcs11.read_pin

    def counting(path: Path, *, session: str) -> str:
        reads.append(path)
        return real(path, session=session)

    monkeypatch.setattr(pkcs11, "read_pin", counting)
    store = TokenKeys(session, tmp_paths(tmp_path / "gw"))
    key, _ = store.ensure_key()
    keys.sign(key, keys.default_signature_algorithm(key), b"signed in the token")
    store.live_key()
    store.store.pairs()
    assert reads == [token.pin_file]


def test_a_queued_revocation_waits_while_the_token_cannot_be_opened(tmp_path: Path) -> None:
    """A superseded certificate's revocation is kept queued (retried later) when the token
    holding its key cannot be opened for now; it is not dropped as if the certificate
    were gone (its retired key pair would then be destroyed and never revoke it)."""
    from keystore_contract import installed
    from swcmp.calife import CaLife, CaLifeStore
    from swcmp.calife.state import reason_code

    token = softhsm.new_token(tmp_path)
    paths = tmp_paths(tmp_path / "gw")
    session = Session(name="gw1", key=token.uri(), pkcs11_module=token.module,
                      pin_file=token.pin_file)
    h = TokenHarness(TokenKeys(session, paths), session, paths, make_pki(tmp_path / "pki"),
                     lambda: TokenKeys(session, paths))
    h.token = token
    old, _, _ = installed(h)
    life = CaLife(paths)
    life.queue_revocation(session, old.serial_number, reason_code("superseded"))
    token.pin_file.chmod(0o644)  # the token cannot be logged into until this is fixed
    notes = life.retry_revocations(session)
    pending = CaLifeStore(paths, session.name).load().pending_revocations
    assert [p["serial"] for p in pending] == [f"{old.serial_number:x}"], notes
    assert "gone" not in " ".join(notes)
    # once the certificate has expired the revocation is dropped, token or not
    after_expiry = old.not_valid_after_utc + timedelta(days=1)
    CaLife(paths, clock=lambda: after_expiry).retry_revocations(session)
    assert not CaLifeStore(paths, session.name).load().pending_revocations
    token.pin_file.chmod(0o600)
    assert TokenKeys(session, paths).key_for(old) is not None


def test_discarding_a_staged_key_never_destroys_the_live_pair(tmp_path: Path) -> None:
    # A journal whose reserved CKA_ID is the live pair's (damaged, or written by hand)
    # and whose transaction ended: the renewal discards "the staged key". In the token
    # that is the current pair, which the live certificate needs; collect() never takes
    # it, and neither may discard_staged().
    from pki import make_pki
    from swcmp.store import Journal, write_cert

    token = softhsm.new_token(tmp_path)
    session = Session(name="gw1", key=token.uri(), pkcs11_module=token.module,
                      pin_file=token.pin_file)
    paths = tmp_paths(tmp_path / "gw")
    store = TokenKeys(session, paths)
    key, _ = store.ensure_key()
    cert = make_pki(tmp_path / "pki").issue(keys.public_key_of(key), cn="gw1.example.net")
    write_cert(paths, session, cert)
    store.enrolled()
    live = store.live_key()
    assert live is not None
    j = Journal(paths, "gw1")
    entry = j.write(phase="sending", token_id=live.handle, regenerate=True)
    TokenKeys(session, paths).discard_staged(j, entry)
    after = TokenKeys(session, paths).live_key()
    assert after is not None and after.handle == live.handle
    # nor the recovery of a run "killed while making" that key
    entry = j.write(phase="key-making", token_id=live.handle, regenerate=True)
    TokenKeys(session, paths).recover(j, entry)
    after = TokenKeys(session, paths).live_key()
    assert after is not None and after.handle == live.handle
