"""Which loaded connection uses a session's certificate (the `session check` item)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from charon_net import CharonNet, available, pem_cert
from swcmp.paths import Paths
from swcmp.session import Session
from swcmp.strongswan import binding_check, charon_dn, connection_bindings

_UNAVAILABLE = available()
pytestmark = [pytest.mark.integration, pytest.mark.root,
              pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CharonNet]:
    with CharonNet(tmp_path_factory.mktemp("net")) as n:
        yield n


def test_identity_mode_binding(net: CharonNet) -> None:
    found = connection_bindings(net.a.uri, pem_cert(net.a_cert))
    assert [(b.connection, b.mode, b.local_id) for b in found] == \
        [("gw", "identity", net.a.identity)]
    # B's certificate is not what A's connections authenticate with
    assert connection_bindings(net.a.uri, pem_cert(net.b_cert)) == ()
    # restricted to connections that do not exist: nothing
    assert connection_bindings(net.a.uri, pem_cert(net.a_cert), connections=["other"]) == ()


def _paths_with_cert(tmp: Path, cert_pem: bytes) -> Paths:
    paths = Paths(tmp / "etc", tmp / "var", tmp / "swanctl")
    paths.x509_dir.mkdir(parents=True)
    paths.cert_file("gw1").write_bytes(cert_pem)
    return paths


def test_binding_check_passes_and_fails(net: CharonNet, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    s = Session(name="gw1", key="gw1")
    ok = binding_check(net.a.uri)(s, _paths_with_cert(tmp_path / "a", pem_cert(net.a_cert)), now)
    assert ok.level == "ok" and "gw (identity" in ok.detail
    bad = binding_check(net.a.uri)(s, _paths_with_cert(tmp_path / "b", pem_cert(net.b_cert)),
                                   now)
    assert bad.level == "warn" and "local.id" in bad.fix  # a runtime item: warns
    dead = binding_check(f"unix://{tmp_path}/none.vici")(
        s, _paths_with_cert(tmp_path / "c", pem_cert(net.a_cert)), now)
    assert dead.level == "warn" and "--vici" in dead.fix


def test_charon_dn_is_wire_order() -> None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    n = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
                   x509.NameAttribute(NameOID.COMMON_NAME, "gw1")])
    assert charon_dn(n) == "C=DE, CN=gw1"
