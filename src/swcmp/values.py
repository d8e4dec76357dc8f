"""The value types of session settings: parsed and checked once, when the setting is
read, so that :mod:`swcmp.session` and :mod:`swcmp.policy` both use them without
importing each other."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from swcmp.errors import ConfigError

_DURATION_RE = re.compile(
    r"(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?"
)
_MAX_DURATION = timedelta(days=36500)


@dataclass(frozen=True)
class ExpireTime:
    """When to renew: a share of the validity period still remaining, or a fixed time.

    Exactly one of the attributes is set.

    Attributes:
        percent: renew when the *remaining* validity falls to this percentage
            (10-100) of the certificate's total validity period. 50 (the
            default) renews half-way; 100 renews at once.
        duration: renew when the remaining validity falls to this duration.
    """

    percent: int | None = 50
    duration: timedelta | None = None

    def __post_init__(self) -> None:
        if (self.percent is None) == (self.duration is None):
            raise ConfigError("expire_time needs exactly one of a percentage or a duration")
        if self.percent is not None and not 10 <= self.percent <= 100:
            raise ConfigError(
                f"expire_time {self.percent}% is out of range",
            )
        if self.duration is not None and not timedelta(0) < self.duration <= _MAX_DURATION:
            raise ConfigError("expire_time duration must be positive and at most 100 years")

    @classmethod
    def parse(cls, value: object) -> ExpireTime:
        """Read ``50``, ``"50%"`` or a duration such as ``"30d"``, ``"1d12h"``, ``"90m"``.

        Duration units: ``w`` weeks, ``d`` days, ``h`` hours, ``m`` minutes, ``s`` seconds.

        Raises:
            ConfigError: anything else, or a percentage outside 10-100.
        """
        if isinstance(value, ExpireTime):
            return value
        hint = (
            "give a percentage 10-100 of the validity period that must REMAIN when "
            "renewing (e.g. 50), or a time before expiry such as 30d, 12h or 90m"
        )
        if isinstance(value, int) and not isinstance(value, bool):
            percent = value
        elif isinstance(value, str):
            text = value.strip().lower().replace(" ", "")
            number = text.removesuffix("%")
            if number.isdigit() and number.isascii():
                percent = int(number)
            else:
                m = _DURATION_RE.fullmatch(text)
                if not text or not m:
                    err = ConfigError(f"invalid expire_time {value!r}")
                    err.hint = hint
                    raise err
                parts = {k: int(v) for k, v in m.groupdict().items() if v is not None}
                try:
                    duration = timedelta(
                        weeks=parts.get("w", 0),
                        days=parts.get("d", 0),
                        hours=parts.get("h", 0),
                        minutes=parts.get("m", 0),
                        seconds=parts.get("s", 0),
                    )
                except OverflowError:
                    duration = _MAX_DURATION * 2
                try:
                    return cls(percent=None, duration=duration)
                except ConfigError as e:
                    e.hint = hint
                    raise
        else:
            raise ConfigError(f"invalid expire_time {value!r}: expected a number or text")
        try:
            return cls(percent=percent)
        except ConfigError as e:
            e.hint = hint
            raise

    def __str__(self) -> str:
        """``50%`` or a compact duration such as ``1d12h``."""
        if self.percent is not None:
            return f"{self.percent}%"
        assert self.duration is not None
        seconds = int(self.duration.total_seconds())
        out = []
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            count, seconds = divmod(seconds, size)
            if count:
                out.append(f"{count}{unit}")
        return "".join(out)

    @classmethod
    def remaining_percent(cls, percent: int) -> ExpireTime:
        """Renew when ``percent`` of the validity period remains."""
        return cls(percent=percent)

    @classmethod
    def before_expiry(cls, duration: timedelta) -> ExpireTime:
        """Renew ``duration`` before the certificate expires."""
        return cls(percent=None, duration=duration)

    def to_toml(self) -> int | str:
        """The value as stored: an integer percentage or a duration string."""
        return self.percent if self.percent is not None else str(self)

    def renew_at(self, not_before: datetime, not_after: datetime) -> datetime:
        """The moment a certificate valid from ``not_before`` to ``not_after`` is due.

        For a percentage p this is ``not_after - p% of (not_after - not_before)``,
        i.e. when only p% of the validity period remains. For a duration it is
        ``not_after - duration``, but never before ``not_before``.
        """
        lifetime = not_after - not_before
        if self.percent is not None:
            # Integer microseconds: exact and independent of float rounding.
            micros = lifetime // timedelta(microseconds=1)
            remaining = timedelta(microseconds=math.ceil(micros * self.percent / 100))
        else:
            assert self.duration is not None
            remaining = min(self.duration, lifetime)
        return not_after - remaining


def duration_seconds(value: object) -> int | None:
    """Whole seconds from ``3600``, ``"3600"``, ``"90m"``, ``"1d12h"`` (units w, d, h, m,
    s); None for anything else (the caller says what is wrong)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip().lower().replace(" ", "")
    if text.isdigit() and text.isascii():
        return int(text)
    m = _DURATION_RE.fullmatch(text)
    if not text or not m:
        return None
    parts = {k: int(v) for k, v in m.groupdict().items() if v is not None}
    sizes = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(n * sizes[unit] for unit, n in parts.items())


def format_seconds(seconds: int) -> str:
    """A compact duration such as ``1d12h`` (``0s`` for nothing)."""
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out) or "0s"
