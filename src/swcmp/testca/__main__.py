"""``python -m swcmp.testca``: the test CA's command line without the swcmp CLI."""

from __future__ import annotations

import sys

from swcmp.testca.cli import main

sys.exit(main())
