"""`session check` builds chains the way the renewal does (swcmp.cmp.certs.build_chain)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from pki import NOW, make_cert, name, pem_cert
from swcmp.checks import _check_chain
from swcmp.paths import Paths
from swcmp.session import Session


def setup(tmp_path: Path, *, intermediate_is_ca: bool, leaf_expired: bool = False):  # type: ignore[no-untyped-def]
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = make_cert(name("Root"), root_key.public_key(), root_key, ca=True, days=3650)
    mid_key = ec.generate_private_key(ec.SECP256R1())
    mid = make_cert(name("Issuing"), mid_key.public_key(), root_key, root.subject,
                    ca=intermediate_is_ca, issuer_cert=root)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    nb = NOW - dt.timedelta(days=10) if leaf_expired else None
    leaf = make_cert(name("gw1"), leaf_key.public_key(), mid_key, mid.subject, issuer_cert=mid,
                     not_before=nb, days=1)
    paths = Paths(tmp_path / "etc", tmp_path / "var", tmp_path / "sw")
    paths.x509ca_dir.mkdir(parents=True)
    paths.ca_cert_file("gw1", 1).write_bytes(pem_cert(mid))
    (tmp_path / "root.crt").write_bytes(pem_cert(root))
    return Session(name="gw1", key="gw1", trust=(str(tmp_path / "root.crt"),)), paths, leaf


def test_chain_via_a_ca_intermediate_passes(tmp_path: Path) -> None:
    s, paths, leaf = setup(tmp_path, intermediate_is_ca=True)
    r = _check_chain(s, paths, leaf, NOW)
    assert r.ok and "via /CN=Issuing" in r.detail


def test_an_intermediate_that_is_no_ca_fails_as_in_a_renewal(tmp_path: Path) -> None:
    s, paths, leaf = setup(tmp_path, intermediate_is_ca=False)
    r = _check_chain(s, paths, leaf, NOW)
    assert not r.ok and "does not chain" in r.detail and "--trust" in r.fix


def test_an_expired_leaf_is_left_to_the_validity_item(tmp_path: Path) -> None:
    s, paths, leaf = setup(tmp_path, intermediate_is_ca=True, leaf_expired=True)
    assert _check_chain(s, paths, leaf, NOW).ok
