"""The key store contract (tests/keystore_contract.py) for keys in a PKCS#11 token:
TokenKeys on a SoftHSM2 token (tests/softhsm.py)."""

from __future__ import annotations

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
