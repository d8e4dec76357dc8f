"""Fixtures shared by the unit and integration tests.

The helper modules beside this file (pki, charon_net, openssl_mock, siemens_mock,
hostile_proxy, renewal_env, scripted_charon, dertree, testpaths) are importable from
every test: pyproject.toml puts this directory on pytest's pythonpath.
"""

from __future__ import annotations

import os

import pytest

from openssl_mock import VERSIONS, OpenSSL
from pki import TestPKI, make_pki

# pytest-xdist's workers (scripts/test runs them) start with COLUMNS=80 and LINES=24 in
# their environment, a terminal that is not there: swcmp's text tables take their width
# from COLUMNS, and the tests that mean a width set it themselves.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("COLUMNS", "LINES"):
        os.environ.pop(_var, None)


@pytest.fixture(params=VERSIONS, ids=[f"openssl-{v}" for v in VERSIONS])
def openssl_peer(request: pytest.FixtureRequest) -> OpenSSL:
    """The machine's OpenSSL (3.0) and Debian 13's (3.5, from tests/debian_root.py)."""
    return OpenSSL.of(request.param)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    """A root CA, the CA's CMP signer (an RA certificate) and a gateway, per module."""
    return make_pki(tmp_path_factory.mktemp("pki"))
