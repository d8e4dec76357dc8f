"""README.md's CLI section and the real command tree stay in step."""

from __future__ import annotations

import re

import click
import pytest

from swcmp.cli import cli
from testpaths import REPO

README = (REPO / "README.md").read_text()


def cli_block() -> list[str]:
    section = README.split("## CLI reference", 1)[1]
    block = section.split("```", 2)[1]
    lines: list[str] = []
    for raw in block.splitlines():
        if raw.startswith("swcmp"):
            lines.append(raw)
        elif raw.strip() and lines:
            lines[-1] += " " + raw.strip()
    return lines


def leaf_commands() -> dict[str, click.Command]:
    out: dict[str, click.Command] = {}

    def walk(cmd: click.Command, path: list[str]) -> None:
        ctx = click.Context(cmd)
        if isinstance(cmd, click.Group):
            if cmd.invoke_without_command and path:  # e.g. `swcmp stats [NAME]`
                out[" ".join(path)] = cmd
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None
                walk(sub, [*path, name])
        else:
            out[" ".join(path)] = cmd

    walk(cli, [])
    return out


def options_of(cmd: click.Command) -> set[str]:
    names: set[str] = set()
    for p in cmd.params:
        if isinstance(p, click.Option):
            names.update(p.opts)
            names.update(p.secondary_opts)
    return names


def split_line(line: str) -> tuple[str, set[str]]:
    words = line.split()[1:]
    path = []
    for w in words:
        if not re.fullmatch(r"[a-z][a-z0-9-]*", w):
            break
        path.append(w)
    opts = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", line))
    return " ".join(path), opts


def test_every_readme_command_and_option_exists() -> None:
    leaves = leaf_commands()
    global_opts = options_of(cli)
    lines = cli_block()
    assert len(lines) > 15
    for line in lines:
        path, opts = split_line(line)
        if not path:  # the global options line
            assert opts <= global_opts | {"-h"}, opts - global_opts
            continue
        assert path in leaves, f"README names `swcmp {path}`, which does not exist"
        known = options_of(leaves[path]) | {"-h"}
        if path == "session create":  # "[same options as session set]"
            known |= options_of(leaves["session set"])
        assert opts <= known, f"swcmp {path}: unknown options {opts - known}"


def test_every_command_is_in_the_readme_and_has_help() -> None:
    readme_paths = {split_line(line)[0] for line in cli_block()}
    for path, cmd in leaf_commands().items():
        assert path in readme_paths, f"`swcmp {path}` is missing from README's CLI section"
        assert (cmd.help or "").strip(), f"`swcmp {path}` has no help text"


@pytest.mark.parametrize(
    "option", sorted(options_of(leaf_commands()["session set"]) - {"--json", "--help", "-h"}))
def test_session_set_options_are_in_the_readme(option: str) -> None:
    assert option in " ".join(cli_block())
