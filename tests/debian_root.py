"""Programs of another Debian release, run from a root file system that scripts/rootfs builds.

swcmp is tested on the machine's Debian 12 and against the OpenSSL and strongSwan of newer
Debian releases. ``DebianRoot.build("trixie", "peers", *TRIXIE_PEERS)`` makes (once, cached
under the checkout's ``.cache/rootfs``) a Debian 13 root file system; ``run`` and ``popen``
start a program inside it with ``chroot`` in a private mount namespace, with ``/proc``,
``/dev`` and ``/sys`` and the given host directories bound at the same paths, so that files
a test writes in its ``tmp_path`` are seen inside under the same name. The network is the
caller's: loopback of the host, or a test namespace with ``netns=``.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from testpaths import REPO

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
        """Build (or reuse) ``.cache/rootfs/RELEASE-NAME`` with ``packages``."""
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
                REPO / ".cache" / "rootfs" / "trixie-peers.stamp").exists():
            pytest.skip("mmdebstrap is not installed (scripts/test installs it)")
        _TRIXIE.append(DebianRoot.build("trixie", "peers", *TRIXIE_PEERS))
    return _TRIXIE[0]
