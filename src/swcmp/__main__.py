"""``python -m swcmp``: the same command line as the ``swcmp`` console script."""

from swcmp.cli import main

main()
