"""Every bench/ script runs: a smoke run with tiny parameters (``--quick``, the convention of
bench/README.md), checked for exit status 0 and for printing measured figures. No timing is
asserted; the figures the README cites come from full runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from testpaths import REPO

pytestmark = pytest.mark.integration

SCRIPTS = sorted((REPO / "bench").glob("*.py"))
#: A figure with its unit, as the scripts print them: "12.8 ms", "33 certificates/s",
#: "58.6 MiB", "1.45x".
FIGURE = re.compile(r"\d+(?:\.\d+)?\s?(?:ms|s|µs|us|MiB|KiB|B|%|x|/s|[a-z]+/s)\b")


def needs(script: Path) -> str | None:
    """Why ``script`` cannot run on this machine, for the scripts that need more than Python."""
    if script.name == "bench_token.py":
        if os.geteuid() != 0:
            return "bench_token.py makes SoftHSM2 tokens as root"
        if shutil.which("softhsm2-util") is None:
            return "softhsm2 is not installed (scripts/test installs it)"
    return None


def test_every_bench_script_is_found() -> None:
    assert len(SCRIPTS) >= 5, SCRIPTS
    for script in SCRIPTS:
        assert "--quick" in script.read_text(), f"{script.name} does not take --quick"


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_bench_script_quick_run(script: Path, tmp_path: Path) -> None:
    why = needs(script)
    if why:
        pytest.skip(why)
    res = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True,
                         text=True, timeout=600, cwd=tmp_path, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    figures = FIGURE.findall(res.stdout)
    assert figures, f"{script.name} printed no figures:\n{res.stdout[-2000:]}"
