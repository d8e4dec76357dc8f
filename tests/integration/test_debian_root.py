"""The Debian 13 root file system that the newer-peer tests run programs from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from debian_root import TRIXIE_PEERS, DebianRoot

pytestmark = [pytest.mark.integration, pytest.mark.root]


@pytest.fixture(scope="module")
def trixie() -> DebianRoot:
    if os.geteuid() != 0:
        pytest.skip("building a root file system needs root")
    return DebianRoot.build("trixie", "peers", *TRIXIE_PEERS)


def test_the_root_runs_debian_13s_openssl_and_strongswan(trixie: DebianRoot) -> None:
    assert trixie.run(["openssl", "version"]).stdout.startswith("OpenSSL 3.5.")
    assert "13" in trixie.run(["cat", "/etc/debian_version"]).stdout.split(".")[0]
    out = trixie.run(["/usr/lib/ipsec/charon", "--version"], check=False)
    assert "6.0" in out.stdout + out.stderr


def test_a_bound_directory_is_seen_at_the_same_path(trixie: DebianRoot,
                                                    tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from the host\n")
    trixie.run(["sh", "-c", f"cat {tmp_path}/in.txt > {tmp_path}/out.txt"],
               binds=[tmp_path])
    assert (tmp_path / "out.txt").read_text() == "from the host\n"
    # nothing of the bind stays behind on the host's view of the root
    assert not (trixie.path / str(tmp_path).lstrip("/") / "in.txt").exists()
