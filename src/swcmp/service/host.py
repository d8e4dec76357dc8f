"""Host-wide settings (``<config_dir>/swcmp.toml``, see :mod:`swcmp.service`) and this
node's HA role."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from swcmp.errors import ConfigError
from swcmp.ha import Role, read_role
from swcmp.paths import Paths


@dataclass(frozen=True)
class HostConfig:
    """Host-wide settings (see :mod:`swcmp.service`)."""

    role_file: Path | None = None
    role_command: str | None = None
    post_renew: tuple[str, ...] = ()
    metrics_file: Path | None = None

    @classmethod
    def load(cls, paths: Paths) -> HostConfig:
        p = paths.config_dir / "swcmp.toml"
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read host settings {p}: {e}").with_hint(
                "fix the file or remove it (all its settings are optional)") from e
        ha, hooks, metrics = (data.get(k, {}) for k in ("ha", "hooks", "metrics"))
        try:
            return cls(
                role_file=Path(ha["role_file"]) if ha.get("role_file") else None,
                role_command=str(ha["role_command"]) if ha.get("role_command") else None,
                post_renew=tuple(str(c) for c in hooks.get("post_renew", [])),
                metrics_file=Path(metrics["textfile"]) if metrics.get("textfile") else None,
            )
        except (TypeError, AttributeError) as e:
            raise ConfigError(f"host settings {p} have a value of the wrong type").with_hint(
                "see the example in contrib/swcmp.toml") from e


def host_role(host: HostConfig) -> Role:
    """This node's HA role per the host settings (see :mod:`swcmp.ha`)."""
    return read_role(host.role_file, host.role_command)
