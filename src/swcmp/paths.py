"""swcmp's directory layout: where each file of a session lives.

Storage layout (the directories come from :class:`Paths`)::

    <config_dir>/sessions/<session>.toml      session settings (0640)
    <config_dir>/sessions/.<session>.lock     lock for editing the settings
    <state_dir>/locks/<session>.lock          lock held by a renewal run
    <state_dir>/sessions/<session>/           per-session state (statistics, transactions)
    <swanctl_dir>/private/<key>.key           the session's private key, PKCS#8 PEM, 0600
    <swanctl_dir>/x509/<session>.crt          the session's current certificate, PEM
    <swanctl_dir>/x509ca/<session>-ca<N>.crt  CA certificates the CA returned, N = 1, 2, ...
                                              in the order the CA sent them

``<key>`` is the session's ``key`` setting (a key pair belongs to one session;
the name lets an existing swanctl key be adopted), the certificate is named
after the session so that swanctl.conf can refer to it by a stable name.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from swcmp import fsutil
from swcmp.names import (
    validate_key_name,
    validate_session_name,
)

DEFAULT_CONFIG_DIR: Final = Path("/etc/swcmp")
DEFAULT_STATE_DIR: Final = Path("/var/lib/swcmp")
DEFAULT_SWANCTL_DIR: Final = Path("/etc/swanctl")


# --- directories ------------------------------------------------------------------

# A renewal pass asks for each session's directories many times; building a Path costs
# more than the rest of such a look-up. Paths are immutable: the same one serves again.


@functools.lru_cache(maxsize=4096)
def _session_state_dir(state_dir: Path, name: str) -> Path:
    return state_dir / "sessions" / validate_session_name(name)


@functools.lru_cache(maxsize=4096)
def _cert_file(swanctl_dir: Path, session_name: str) -> Path:
    return swanctl_dir / "x509" / f"{validate_session_name(session_name)}.crt"


def forget_built_paths() -> None:
    """Drop the paths built so far (serve, after each pass: about 0.4 KiB a path)."""
    _session_state_dir.cache_clear()
    _cert_file.cache_clear()



@dataclass(frozen=True)
class Paths:
    """The three directories swcmp uses, and where each file lives in them.

    Attributes:
        config_dir: session settings (default ``/etc/swcmp``, env ``SWCMP_CONFIG_DIR``).
        state_dir: statistics, locks, in-flight transactions (default
            ``/var/lib/swcmp``, env ``SWCMP_STATE_DIR``).
        swanctl_dir: strongSwan's credential directory (default ``/etc/swanctl``,
            env ``SWCMP_SWANCTL_DIR``).
    """

    config_dir: Path = DEFAULT_CONFIG_DIR
    state_dir: Path = DEFAULT_STATE_DIR
    swanctl_dir: Path = DEFAULT_SWANCTL_DIR

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        config_dir: Path | None = None,
        state_dir: Path | None = None,
        swanctl_dir: Path | None = None,
    ) -> Paths:
        """Resolve the directories: explicit argument, else environment, else default.

        Args:
            environ: the environment to read (``os.environ`` when None).
            config_dir: from ``--config-dir``, overrides the environment.
            state_dir: from ``--state-dir``.
            swanctl_dir: from ``--swanctl-dir``.
        """
        env = os.environ if environ is None else environ

        def pick(given: Path | None, var: str, default: Path) -> Path:
            if given is not None:
                return Path(given)
            value = env.get(var, "")
            return Path(value) if value else default

        return cls(
            config_dir=pick(config_dir, "SWCMP_CONFIG_DIR", DEFAULT_CONFIG_DIR),
            state_dir=pick(state_dir, "SWCMP_STATE_DIR", DEFAULT_STATE_DIR),
            swanctl_dir=pick(swanctl_dir, "SWCMP_SWANCTL_DIR", DEFAULT_SWANCTL_DIR),
        )

    @property
    def sessions_dir(self) -> Path:
        """``<config_dir>/sessions``: one TOML file per session."""
        return self.config_dir / "sessions"

    @property
    def lock_dir(self) -> Path:
        """``<state_dir>/locks``: one lock file per session for renewal runs."""
        return self.state_dir / "locks"

    @property
    def private_dir(self) -> Path:
        """swanctl's ``private/`` directory (private keys)."""
        return self.swanctl_dir / "private"

    @property
    def x509_dir(self) -> Path:
        """swanctl's ``x509/`` directory (end-entity certificates)."""
        return self.swanctl_dir / "x509"

    @property
    def x509ca_dir(self) -> Path:
        """swanctl's ``x509ca/`` directory (CA certificates)."""
        return self.swanctl_dir / "x509ca"

    def session_state_dir(self, name: str) -> Path:
        """``<state_dir>/sessions/<name>``: the session's state files."""
        return _session_state_dir(self.state_dir, name)

    def key_file(self, key_name: str) -> Path:
        """``private/<key_name>.key`` (mode 0600)."""
        return self.private_dir / f"{validate_key_name(key_name)}.key"

    def cert_file(self, session_name: str) -> Path:
        """``x509/<session>.crt``: the session's current certificate."""
        return _cert_file(self.swanctl_dir, session_name)

    def ca_cert_file(self, session_name: str, index: int) -> Path:
        """``x509ca/<session>-ca<index>.crt``, ``index`` counting from 1."""
        if index < 1:
            raise ValueError("CA certificate index counts from 1")
        return self.x509ca_dir / f"{validate_session_name(session_name)}-ca{index}.crt"

    def ca_cert_files(self, session_name: str) -> tuple[Path, ...]:
        """The session's stored CA certificates that exist, in index order."""
        name = validate_session_name(session_name)
        pattern = re.compile(re.escape(name) + r"-ca([1-9][0-9]*)\.crt")
        try:
            entries = list(self.x509ca_dir.iterdir())
        except FileNotFoundError:
            return ()
        except OSError as e:
            raise fsutil.storage_error(e, self.x509ca_dir, "list") from e
        found: list[tuple[int, Path]] = []
        for entry in entries:
            m = pattern.fullmatch(entry.name)
            if m:
                found.append((int(m.group(1)), entry))
        return tuple(p for _, p in sorted(found))
