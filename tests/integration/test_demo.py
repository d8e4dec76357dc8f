"""The README's demo command, run end to end; assertions on what it reports it did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from charon_net import available
from testpaths import REPO

pytestmark = pytest.mark.integration


def run_demo(tmp_path: Path, *args: str) -> dict[str, object]:
    result = tmp_path / "demo.json"
    env = dict(os.environ, SWCMP_VENV=sys.prefix)
    proc = subprocess.run([str(REPO / "scripts" / "demo"), "--result", str(result), *args],
                          capture_output=True, text=True, env=env, timeout=240)
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out: dict[str, object] = json.loads(result.read_text())
    return out


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("swcmp-")}


@pytest.mark.root
@pytest.mark.skipif(available() is not None, reason=available() or "")
def test_demo_with_two_gateways(tmp_path: Path) -> None:
    before = namespaces()
    out = run_demo(tmp_path)
    assert out["ok"] is True and out["mode"] == "charon"
    assert out["new_serial"] != out["old_serial"]
    # B verified A's enrolled certificate before, and the renewed one after
    assert out["b_saw_before"] == out["old_serial"]
    assert out["b_saw_after"] == out["new_serial"]
    # charon on A holds the new certificate's key and nothing else
    assert out["charon_keys"] == [out["expected_key"]]
    assert out["sa_kept"] is True
    assert float(out["seconds"]) < 120  # type: ignore[arg-type]
    # nothing left behind: the demo's namespaces are gone
    assert namespaces() <= before


def test_demo_files_only(tmp_path: Path) -> None:
    out = run_demo(tmp_path, "--files-only")
    assert out["ok"] is True and out["mode"] == "files"
    assert out["new_serial"] != out["old_serial"]
