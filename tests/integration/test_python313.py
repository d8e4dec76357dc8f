"""swcmp's unit tests under Debian 13's Python 3.13, from the root file system of
tests/debian_root.py, in the virtual environment of :func:`debian_root.trixie_venv`
(swcmp installed from this checkout)."""

from __future__ import annotations

import os

import pytest

from debian_root import trixie, trixie_venv
from testpaths import REPO

pytestmark = [pytest.mark.integration, pytest.mark.root]

def test_unit_tests_pass_under_debian_13s_python_313() -> None:
    python = trixie_venv()
    root = trixie()
    version = root.run([python, "-c", "import sys, swcmp; print(sys.version); "
                                      "print(swcmp.__file__)"], binds=[REPO])
    assert version.stdout.startswith("3.13."), version.stdout
    assert version.stdout.splitlines()[1].startswith(str(REPO / "src" / "swcmp"))
    res = root.run([python, "-m", "pytest", "tests/unit", "-q", "-x", "-p", "no:cacheprovider"],
                   binds=[REPO], cwd=REPO, check=False, timeout=900,
                   env={k: v for k, v in os.environ.items() if not k.startswith("PIP_")})
    tail = res.stdout[-3000:] + res.stderr[-2000:]
    assert res.returncode == 0, tail
    assert " passed" in res.stdout.splitlines()[-1] and "failed" not in res.stdout, tail
