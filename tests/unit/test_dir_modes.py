"""Audit: directories swcmp creates are never group/world-writable, whatever the umask.

``ensure_dir`` created missing parents with Path.mkdir's default 0o777, so under
umask 000 the state directory and its ``sessions/`` became world-writable: any
local user could swap a session's state directory for one holding a
"confirmed" journal and a staged key and certificate of their own, which the
next run committed to swanctl's private/ and x509/.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from swcmp import fsutil
from swcmp.errors import StorageIOError


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask_000")
def test_parents_created_under_umask_000_are_not_writable_by_others(tmp_path: Path) -> None:
    leaf = tmp_path / "var" / "lib" / "swcmp" / "locks"
    fsutil.ensure_dir(leaf, mode=0o700)
    assert leaf.stat().st_mode & 0o777 == 0o700
    for d in (tmp_path / "var", tmp_path / "var" / "lib", tmp_path / "var" / "lib" / "swcmp"):
        assert d.stat().st_mode & 0o022 == 0, f"{d} is {oct(d.stat().st_mode & 0o777)}"


@pytest.mark.usefixtures("umask_000")
def test_existing_dirs_keep_their_mode_and_files_in_the_way_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir(mode=0o750)
    os.chmod(tmp_path / "a", 0o750)
    fsutil.ensure_dir(tmp_path / "a" / "b")
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o750
    (tmp_path / "f").write_text("")
    with pytest.raises(StorageIOError):
        fsutil.ensure_dir(tmp_path / "f" / "x")
    with pytest.raises(StorageIOError):
        fsutil.ensure_dir(tmp_path / "f")
