"""The README's demo command, run end to end; assertions on what it reports it did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from charon_net import available, pid_alive
from testpaths import REPO

pytestmark = pytest.mark.integration


#: Commands that stop, start or restart host services.
SERVICE_COMMANDS = ("systemctl", "service", "invoke-rc.d", "deb-systemd-invoke", "ipsec")


def service_spies(tmp_path: Path) -> tuple[Path, Path]:
    """A directory of wrappers, first on PATH, that record every call of a service command
    and then run the real one (if any), and the file they record into."""
    spies, calls = tmp_path / "spies", tmp_path / "service-calls"
    spies.mkdir()
    for name in SERVICE_COMMANDS:
        spy = spies / name
        spy.write_text('#!/bin/sh\n'
                       f'echo "{name} $*" >> {calls}\n'
                       f'PATH="${{PATH#{spies}:}}"; exec {name} "$@"\n')
        spy.chmod(0o755)
    return spies, calls


def running_units() -> str | None:
    """The host's running systemd units, where systemd runs."""
    if not Path("/run/systemd/system").is_dir():
        return None
    return subprocess.run(["systemctl", "list-units", "--state=running", "--no-legend",
                           "--plain"], capture_output=True, text=True, timeout=30).stdout


def run_demo(tmp_path: Path, *args: str) -> dict[str, object]:
    result = tmp_path / "demo.json"
    spies, calls = service_spies(tmp_path)
    units = running_units()
    env = dict(os.environ, SWCMP_VENV=sys.prefix,
               PATH=f"{spies}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    proc = subprocess.run([str(REPO / "scripts" / "demo"), "--result", str(result), *args],
                          capture_output=True, text=True, env=env, timeout=240)
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the host's services are as the demo found them: it never stopped or started one
    assert not calls.exists(), calls.read_text()
    assert running_units() == units
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
    # nothing left behind: the demo's namespaces are gone (swcmp-<pid>-...: the demo's
    # processes have exited; a namespace of a live process is another test's, running now)
    assert not {ns for ns in namespaces() - before if not pid_alive(int(ns.split("-")[1]))}


def test_demo_files_only(tmp_path: Path) -> None:
    out = run_demo(tmp_path, "--files-only")
    assert out["ok"] is True and out["mode"] == "files"
    assert out["new_serial"] != out["old_serial"]
