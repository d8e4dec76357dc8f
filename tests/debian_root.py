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
  mkdir -p "$root$1"
  mount --bind "$1" "$root$1"
  shift
done
shift
exec chroot "$root" "$@"
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
             netns: str | None = None) -> list[str]:
        """The host command line that runs ``argv`` inside this root."""
        host = [str(Path(b).resolve()) for b in binds]
        cmd = ["unshare", "--mount", "--propagation", "private", "--",
               "sh", "-c", _ENTER, "enter", str(self.path), *host, "--", *argv]
        if netns is not None:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        return cmd

    def run(self, argv: Sequence[str], *, binds: Iterable[Path | str] = (),
            netns: str | None = None, check: bool = True, timeout: float = 120,
            **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the root and wait for it (text mode, output captured)."""
        kwargs.setdefault("capture_output", True)
        return subprocess.run(self.argv(argv, binds=binds, netns=netns), check=check,
                              text=True, timeout=timeout, **kwargs)

    def popen(self, argv: Sequence[str], *, binds: Iterable[Path | str] = (),
              netns: str | None = None, **kwargs: Any) -> subprocess.Popen[str]:
        """Start ``argv`` inside the root (a server, a daemon)."""
        return subprocess.Popen(self.argv(argv, binds=binds, netns=netns), text=True,
                                **kwargs)

    def describe(self, argv: Sequence[str]) -> str:
        """``argv`` as a shell line, for messages."""
        return f"[{self.path.name}] " + shlex.join(argv)
