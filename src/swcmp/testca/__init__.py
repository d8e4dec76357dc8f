"""The embedded CMP test CA (``swcmp testca serve``): a small, strict, real CMP CA.

It is to swcmp what Pebble is to ACME clients: it issues real certificates for
exactly the keys requested, checks requests the way a careful CA does, keeps
its state in a directory, and has knobs that inject the faults a client must
survive. Use :class:`TestCA` in-process or ``swcmp testca serve`` (see
:mod:`swcmp.testca.cli`).
"""

from __future__ import annotations

from swcmp.testca.config import FAULTS, CAConfig, parse_duration
from swcmp.testca.server import TestCA

__all__ = ["FAULTS", "CAConfig", "TestCA", "parse_duration"]
