"""Where the tests find the repository, the captured vectors and contrib/."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
DATA = TESTS / "data" / "openssl-3.0"
