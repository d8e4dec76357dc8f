"""A renewal pass reads each session's state and certificate once while they are
unchanged, and again when they changed (the CPU figures: bench/bench_renewal.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pki import make_pki, pem_cert
from swcmp.paths import Paths
from swcmp.service import passes
from swcmp.service.passes import PassFiles, RenewalService
from swcmp.sessionfile import SessionStore
from swcmp.state import StateStore


def _site(tmp_path: Path, names: tuple[str, ...]) -> Paths:
    paths = Paths(tmp_path / "etc", tmp_path / "var", tmp_path / "swanctl")
    pki = make_pki(tmp_path / "pki")
    store = SessionStore(paths.config_dir)
    paths.x509_dir.mkdir(parents=True)
    for name in names:
        store.create(name, {"entity": f"/CN={name}"})
        paths.cert_file(name).write_bytes(pem_cert(pki.gw))
        with StateStore(paths).update(name) as st:
            st.failures = 0
    return paths


def test_pass_files_reads_an_unchanged_file_once_and_a_changed_one_again(
        tmp_path: Path) -> None:
    paths = _site(tmp_path, ("gw1",))
    files = PassFiles(paths)
    st, cert = files.state("gw1"), files.cert("gw1")
    assert files.state("gw1") is st and files.cert("gw1") is cert
    with StateStore(paths).update("gw1") as changing:
        changing.failures = 3
    again = files.state("gw1")
    assert again is not st and again.failures == 3
    pki = make_pki(tmp_path / "pki2")
    paths.cert_file("gw1").write_bytes(pem_cert(pki.gw))
    other = files.cert("gw1")
    assert other is not None and other.serial_number == pki.gw.serial_number
    paths.cert_file("gw1").unlink()
    assert files.cert("gw1") is None  # a vanished certificate is not remembered


def test_a_pass_reads_each_state_file_once(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    names = ("gw1", "gw2", "gw3")
    paths = _site(tmp_path, names)
    loads: list[str] = []
    certs: list[str] = []
    real_load, real_cert = StateStore.load, passes.load_cert

    def counting_load(self: StateStore, name: str) -> object:
        loads.append(name)
        return real_load(self, name)

    def counting_cert(p: Paths, name: str) -> object:
        certs.append(name)
        return real_cert(p, name)

    monkeypatch.setattr(StateStore, "load", counting_load)
    monkeypatch.setattr(passes, "load_cert", counting_cert)
    reports = RenewalService(paths).run_pass()
    assert sorted(r.session for r in reports) == list(names)
    assert all(r.result == "skipped" for r in reports)  # auto_update is off: nothing asked
    assert sorted(loads) == sorted(certs) == list(names)


def test_a_session_with_a_key_file_loads_no_token_code() -> None:
    import subprocess
    import sys

    code = ("import sys\n"
            "from swcmp import keystore\n"
            "from swcmp.paths import Paths\n"
            "from swcmp.session import Session\n"
            "s = Session(name='gw1', key='gw1', regenerate=True)\n"
            "keystore.open(s, Paths())\n"
            "print(sorted(m for m in sys.modules if 'pkcs11' in m))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
