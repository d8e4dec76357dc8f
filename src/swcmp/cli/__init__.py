"""The ``swcmp`` command line: thin click commands that parse, call the core, render.

The root group, the shared state, error output and exit codes are in
:mod:`swcmp.cli.root`; each command group is a module of its own
(:mod:`~swcmp.cli.sessions`, :mod:`~swcmp.cli.requests` with
:mod:`~swcmp.cli.ca_requests`, :mod:`~swcmp.cli.status`,
:mod:`~swcmp.cli.run`), with the setting options in :mod:`~swcmp.cli.options` and
all text and JSON output in :mod:`~swcmp.cli.render`. Importing this package
registers every command; no module below the CLI imports it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence

import click

from swcmp.cli import (  # noqa: F401  (they register commands)
    ca_requests,
    requests,
    run,
    sessions,
    status,
)
from swcmp.cli.root import cli

__all__ = ["cli", "iter_commands", "main"]


def iter_commands(
    command: click.Command = cli, path: tuple[str, ...] = ("swcmp",)
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command below ``command`` (inclusive), with its path; for docs and tests."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from iter_commands(sub, (*path, name))


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``swcmp`` command line (the console script and ``python -m swcmp``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="swcmp")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
