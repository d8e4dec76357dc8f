"""The result of one ``session check`` item, below every module that makes one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["FAIL", "LEVELS", "OK", "PENDING", "WARN", "CheckResult", "Level"]

Level = Literal["ok", "warn", "pending", "fail"]
OK: Level = "ok"
WARN: Level = "warn"
#: Not there yet, and rightly so: what ``swcmp request initial`` makes (the
#: certificate, a key it generates). Not a failure, but auto-update needs it.
PENDING: Level = "pending"
FAIL: Level = "fail"
#: The levels, least severe first.
LEVELS: tuple[Level, ...] = (OK, WARN, PENDING, FAIL)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        name: a stable identifier such as ``entity`` or ``auth-cert-chain``.
        level: ``ok`` (passed), ``warn`` (a problem that does not block
            auto-update, e.g. charon is not running now), ``pending`` (made by the
            first request, so not there before it; blocks auto-update but is not a
            failure) or ``fail`` (blocks it).
        detail: what was found, for people (never secret material).
        fix: what to run to fix it; empty when the level is ``ok``.
    """

    name: str
    level: Level
    detail: str
    fix: str = ""

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"check level must be one of {LEVELS}, not {self.level!r}")

    @property
    def ok(self) -> bool:
        """Whether this result lets auto-update be enabled (``ok`` or ``warn``)."""
        return self.level in (OK, WARN)
