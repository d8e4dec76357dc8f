"""serve's pass and other processes of the same host: the session lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from swcmp.paths import Paths
from swcmp.service.passes import RenewalService


def test_replaced_keys_are_collected_only_under_the_sessions_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A renewal of another process (holding the session's lock) may be retiring or
    # rolling back a pair: the pass leaves that session's key store alone until later.
    from swcmp import fsutil, keystore
    from swcmp.session import Session
    from swcmp.sessionfile import SessionStore

    paths = Paths(tmp_path / "etc", tmp_path / "var", tmp_path / "swanctl")
    SessionStore(paths.config_dir).save(Session(name="gw1", key="gw1"))  # type: ignore[arg-type]
    collected: list[str] = []

    class Store:
        collects = True  # as a token's store
        key_types: tuple[str, ...] = ()

        def __init__(self, s: Session) -> None:
            self.name = s.name

        def collect(self, held: object, *, keep_serials: object = ()) -> list[str]:
            collected.append(self.name)
            return []

    monkeypatch.setattr(keystore, "open", lambda s, p: Store(s))
    service = RenewalService(paths)
    with fsutil.exclusive_lock(paths.lock_dir, "gw1", blocking=False):
        service.collect_replaced_keys()
    assert collected == []
    service.collect_replaced_keys()
    assert collected == ["gw1"]


def test_a_key_file_session_is_not_locked_by_the_collection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A file store's collect() does nothing: the pass takes no lock for it (1 000
    # sessions: 1 000 lock files opened, locked and written for nothing).
    from swcmp import fsutil
    from swcmp.session import Session
    from swcmp.sessionfile import SessionStore

    paths = Paths(tmp_path / "etc", tmp_path / "var", tmp_path / "swanctl")
    SessionStore(paths.config_dir).save(Session(name="gw1", key="gw1"))  # type: ignore[arg-type]
    locked: list[str] = []
    real = fsutil.exclusive_lock

    def counting(directory: Path, name: str, **kw: object) -> object:
        locked.append(name)
        return real(directory, name, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(fsutil, "exclusive_lock", counting)
    RenewalService(paths).collect_replaced_keys()
    assert locked == []
