"""Programs of another Debian release, run from a root file system that scripts/rootfs builds.

swcmp is tested on the machine's Debian 12 and against the OpenSSL and strongSwan of newer
Debian releases. ``DebianRoot.build("trixie", "peers", *TRIXIE_PEERS)`` makes (once, cached
under ``$SWCMP_TEST_CACHE/rootfs``, by default ``/var/cache/swcmp-tests``) a Debian 13 root
file system; ``run`` and ``popen`` start a program inside it with ``chroot`` in a private
mount namespace, with ``/proc``, ``/dev`` and ``/sys`` and the given host directories bound
at the same paths, so that files a test writes in its ``tmp_path`` are seen inside under
the same name. The network is the caller's: loopback of the host, or a test namespace
with ``netns=``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from testpaths import REPO

#: Where scripts/rootfs and scripts/build-deb keep what every checkout of the machine
#: can share (root file systems, wheels, apt's downloads).
TEST_CACHE = Path(os.environ.get("SWCMP_TEST_CACHE", "/var/cache/swcmp-tests"))

#: Debian 13's peers: OpenSSL 3.5 (openssl cmp), strongSwan 6.0 (charon, swanctl, pki)
#: and Python 3.13 with venv.
TRIXIE_PEERS = (
    "openssl", "strongswan-charon", "strongswan-swanctl", "strongswan-pki",
    "libstrongswan-standard-plugins", "iproute2", "python3", "python3-venv",
    "ca-certificates",
)

_ENTER = r"""
set -e
root=$1; shift
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
while [ "$1" != -- ]; do
  if [ "${1#tmpfs:}" != "$1" ]; then
    mount -t tmpfs -o size=8m,mode=0755 swcmp-tmpfs "$root${1#tmpfs:}"
    shift
    continue
  fi
  mkdir -p "$root$1"
  mount --bind "$1" "$root$1"
  shift
done
shift
cwd=$1; shift
exec chroot "$root" sh -c 'cd "$0" && exec "$@"' "$cwd" "$@"
"""


class DebianRoot:
    """One root file system made by scripts/rootfs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def build(cls, release: str, name: str, *packages: str) -> DebianRoot:
        """Build (or reuse) the root ``RELEASE-NAME`` with ``packages`` (scripts/rootfs)."""
        out = subprocess.run(
            [str(REPO / "scripts" / "rootfs"), release, name, *packages],
            check=True, stdout=subprocess.PIPE, text=True, timeout=900,
        ).stdout
        return cls(Path(out.strip().splitlines()[-1]))

    def argv(self, argv: Sequence[str], *, binds: Iterable[Path | str] = (),
             netns: str | None = None, cwd: Path | str = "/",
             tmpfs: Iterable[str] = ()) -> list[str]:
        """The host command line that runs ``argv`` inside this root.

        ``cwd`` is the working directory inside (a bound path, or one of the root's);
        each of ``tmpfs`` (e.g. ``/run``) gets a private, empty tmpfs, so that two
        daemons started from the same root do not share their pid files.
        """
        host = [str(Path(b).resolve()) for b in binds]
        host += [f"tmpfs:{t}" for t in tmpfs]
        cmd = ["unshare", "--mount", "--propagation", "private", "--",
               "sh", "-c", _ENTER, "enter", str(self.path), *host, "--", str(cwd), *argv]
        if netns is not None:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        return cmd

    def run(self, argv: Sequence[str], *, binds: Iterable[Path | str] = (),
            netns: str | None = None, cwd: Path | str = "/", check: bool = True,
            timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the root and wait for it (text mode, output captured)."""
        kwargs.setdefault("capture_output", True)
        return subprocess.run(self.argv(argv, binds=binds, netns=netns, cwd=cwd),
                              check=check, text=True, timeout=timeout, **kwargs)

    def popen(self, argv: Sequence[str], *, binds: Iterable[Path | str] = (),
              netns: str | None = None, cwd: Path | str = "/",
              **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the root (a server, a daemon)."""
        kwargs.setdefault("text", True)
        return subprocess.Popen(self.argv(argv, binds=binds, netns=netns, cwd=cwd),
                                **kwargs)

    def describe(self, argv: Sequence[str]) -> str:
        """``argv`` as a shell line, for messages."""
        return f"[{self.path.name}] " + shlex.join(argv)


_TRIXIE: list[DebianRoot] = []


def trixie() -> DebianRoot:
    """Debian 13's root with :data:`TRIXIE_PEERS`, built (or found) once per test run.

    Skips the calling test where it cannot be built (not root, no mmdebstrap);
    CI runs as root with mmdebstrap installed by scripts/test, so it never skips there.
    """
    import os
    import shutil

    import pytest

    if not _TRIXIE:
        if os.geteuid() != 0:
            pytest.skip("the Debian 13 root file system needs root (mmdebstrap, chroot)")
        if shutil.which("mmdebstrap") is None and not (
                TEST_CACHE / "rootfs" / "trixie-peers.stamp").exists():
            pytest.skip("mmdebstrap is not installed (scripts/test installs it)")
        _TRIXIE.append(DebianRoot.build("trixie", "peers", *TRIXIE_PEERS))
    return _TRIXIE[0]


CACHE = REPO / ".cache" / "py313"
#: downloads are shared by the machine's checkouts, like the root file systems
WHEELS = TEST_CACHE / "wheels-py313"
VENV = CACHE / "venv"
#: What the unit tests need beside swcmp's own dependencies.
TEST_TOOLS = ("pytest>=8", "hypothesis>=6", "setuptools>=77", "wheel")
#: manylinux tags Debian 13 (glibc 2.41) takes, newest first; "any" for pure Python.
PLATFORMS = ("manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "any")


#: Of pyproject's test extra, what the unit tests do not need (linters, type stubs, the
#: PKCS#11 binding whose tests are integration tests, the parallel runner).
NOT_FOR_UNIT_TESTS = ("mypy", "ruff", "types-", "python-pkcs11", "pytest-xdist")


def _requirements() -> list[str]:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extra = [r for r in project["optional-dependencies"]["test"]
             if not r.startswith(NOT_FOR_UNIT_TESTS)]
    return [*project["dependencies"], *extra, *TEST_TOOLS]


def _clean_env() -> dict[str, str]:
    """The environment without the machine's pip settings (its mirrors, certificates)."""
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}


def trixie_venv() -> str:
    """Debian 13's Python 3.13 in a virtual environment with swcmp (from this checkout,
    editable) and pytest; returns its python, a host path that runs inside the root with
    ``binds=[REPO]``.

    The wheels (pyproject's dependencies, pytest, hypothesis, the build backend) are
    fetched once by the machine's pip for Python 3.13 into ``$SWCMP_TEST_CACHE/wheels-py313``;
    inside the root Debian 13's python3 makes the environment (the checkout's ignored
    ``.cache/py313/venv``: it installs this checkout) from those wheels only. Both are
    made again when pyproject.toml changes.
    """
    import fcntl
    import hashlib
    import os

    import pytest

    root = trixie()
    if os.uname().machine != "x86_64":
        pytest.skip("the wheel list is for x86_64")
    want = hashlib.sha256((REPO / "pyproject.toml").read_bytes()
                          + " ".join(_requirements()).encode()).hexdigest()
    # one maker at a time on the machine: pytest's workers and other checkouts run at
    # once and share the wheels
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    with (TEST_CACHE / "py313.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _make_venv(root, want)


def _make_venv(root: DebianRoot, want: str) -> str:
    import sys

    stamp = CACHE / "stamp"
    python = str(VENV / "bin" / "python")
    if stamp.exists() and stamp.read_text() == want and (VENV / "bin" / "python").exists():
        return python
    WHEELS.mkdir(parents=True, exist_ok=True)
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "-d", str(WHEELS),
         "--python-version", "3.13", "--only-binary=:all:", *platforms, *_requirements()],
        check=True, timeout=600)
    subprocess.run(["rm", "-rf", str(VENV)], check=True)
    env = {**_clean_env(), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    made = root.run(
        ["sh", "-c", 'v=$0 w=$1 r=$2; shift 3; python3 -m venv "$v" && "$v/bin/pip" install '
                     '-q --no-index --find-links "$w" -e "$r" "$@"',
         str(VENV), str(WHEELS), str(REPO),
         *(r for r in _requirements() if not r.startswith(("setuptools", "wheel")))],
        binds=[REPO, WHEELS], check=False, timeout=600, env=env)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-3000:]
    stamp.write_text(want)
    return python
