"""Tests for swcmp.fsutil: atomic writes, directory helpers, exclusive locks."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from swcmp import fsutil
from swcmp.errors import LockHeldError, StorageError, StorageIOError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


class TestAtomicWrite:
    def test_creates_file_with_content_and_mode(self, tmp_path: Path) -> None:
        target = tmp_path / "a.key"
        fsutil.atomic_write(target, b"secret", mode=0o600)
        assert target.read_bytes() == b"secret"
        assert _mode(target) == 0o600
        assert _leftovers(tmp_path) == []

    def test_replaces_existing(self, tmp_path: Path) -> None:
        target = tmp_path / "a.crt"
        target.write_bytes(b"old")
        fsutil.atomic_write(target, b"new")
        assert target.read_bytes() == b"new"
        assert _mode(target) == 0o644

    def test_mode_exact_despite_umask(self, tmp_path: Path) -> None:
        old = os.umask(0o077)
        try:
            fsutil.atomic_write(tmp_path / "pub.crt", b"x", mode=0o644)
        finally:
            os.umask(old)
        assert _mode(tmp_path / "pub.crt") == 0o644

    def test_private_file_never_chmodded_after_write(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Record the mode of the temporary file at the moment data is written.
        modes: list[int] = []
        real_write = os.write

        def spy(fd: int, data: bytes | memoryview) -> int:
            modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", spy)
        monkeypatch.setattr(os, "chmod", lambda *a, **k: pytest.fail("chmod after write"))
        fsutil.atomic_write(tmp_path / "k.key", b"secret", mode=0o600)
        assert modes and all(m == 0o600 for m in modes)

    def test_short_writes_are_completed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real_write = os.write
        monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))
        fsutil.atomic_write(tmp_path / "f", b"0123456789")
        assert (tmp_path / "f").read_bytes() == b"0123456789"

    @pytest.mark.parametrize(
        ("err", "words"),
        [
            (errno.ENOSPC, "full"),
            (errno.EDQUOT, "quota"),
            (errno.EIO, "I/O"),
        ],
    )
    def test_disk_full_keeps_old_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, words: str
    ) -> None:
        target = tmp_path / "gw1.key"
        target.write_bytes(b"old key")
        target.chmod(0o600)

        def failing_write(fd: int, data: bytes | memoryview) -> int:
            raise OSError(err, os.strerror(err))

        monkeypatch.setattr(os, "write", failing_write)
        with pytest.raises(StorageIOError) as info:
            fsutil.atomic_write(target, b"new key", mode=0o600)
        assert target.read_bytes() == b"old key"
        assert _leftovers(tmp_path) == []
        assert info.value.errno == err
        assert info.value.path == str(target)
        assert str(target) in str(info.value)
        assert words in str(info.value)

    def test_fsync_failure_keeps_old_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        target = tmp_path / "f"
        target.write_bytes(b"old")

        def failing_fsync(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "fsync", failing_fsync)
        with pytest.raises(StorageError):
            fsutil.atomic_write(target, b"new")
        assert target.read_bytes() == b"old"
        assert _leftovers(tmp_path) == []

    def test_rename_failure_keeps_old_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        target = tmp_path / "f"
        target.write_bytes(b"old")

        def failing_replace(src: str, dst: str) -> None:
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(os, "replace", failing_replace)
        with pytest.raises(StorageIOError, match="read-only"):
            fsutil.atomic_write(target, b"new")
        assert target.read_bytes() == b"old"
        assert _leftovers(tmp_path) == []

    def test_interrupt_removes_temp_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def interrupted(fd: int, data: bytes | memoryview) -> int:
            raise KeyboardInterrupt

        monkeypatch.setattr(os, "write", interrupted)
        with pytest.raises(KeyboardInterrupt):
            fsutil.atomic_write(tmp_path / "f", b"x")
        assert list(tmp_path.iterdir()) == []

    def test_missing_directory(self, tmp_path: Path) -> None:
        with pytest.raises(StorageIOError) as info:
            fsutil.atomic_write(tmp_path / "nope" / "f", b"x")
        assert info.value.errno == errno.ENOENT
        assert "does not exist" in str(info.value)

    @pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
    def test_permission_denied(self, tmp_path: Path) -> None:
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        with pytest.raises(StorageIOError, match="permission"):
            fsutil.atomic_write(locked / "f", b"x")

    @pytest.mark.parametrize(
        ("err", "words"), [(errno.EACCES, "run swcmp as root"), (errno.EROFS, "read-write")]
    )
    def test_create_errors_explained(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, words: str
    ) -> None:
        def failing_open(*args: object, **kwargs: object) -> int:
            raise OSError(err, os.strerror(err))

        monkeypatch.setattr(os, "open", failing_open)
        with pytest.raises(StorageIOError) as info:
            fsutil.atomic_write(tmp_path / "f", b"x")
        assert words in str(info.value)
        assert str(tmp_path) in str(info.value)

    def test_exclusive_refuses_existing(self, tmp_path: Path) -> None:
        target = tmp_path / "f"
        target.write_bytes(b"old")
        with pytest.raises(StorageIOError) as info:
            fsutil.atomic_write(target, b"new", exclusive=True)
        assert info.value.errno == errno.EEXIST
        assert target.read_bytes() == b"old"
        assert _leftovers(tmp_path) == []
        fsutil.atomic_write(tmp_path / "g", b"new", exclusive=True)
        assert (tmp_path / "g").read_bytes() == b"new"

    def test_symlink_is_replaced_not_followed(self, tmp_path: Path) -> None:
        victim = tmp_path / "victim"
        victim.write_bytes(b"keep")
        link = tmp_path / "link"
        link.symlink_to(victim)
        fsutil.atomic_write(link, b"new")
        assert victim.read_bytes() == b"keep"
        assert not link.is_symlink()
        assert link.read_bytes() == b"new"


class TestDirs:
    def test_ensure_dir(self, tmp_path: Path) -> None:
        d = fsutil.ensure_dir(tmp_path / "a" / "b", mode=0o700)
        assert d.is_dir()
        assert fsutil.ensure_dir(d) == d  # idempotent

    def test_ensure_dir_over_file(self, tmp_path: Path) -> None:
        (tmp_path / "f").write_bytes(b"")
        with pytest.raises(StorageIOError, match="a file of that name exists"):
            fsutil.ensure_dir(tmp_path / "f")

    def test_remove_file(self, tmp_path: Path) -> None:
        f = tmp_path / "f"
        f.write_bytes(b"")
        assert fsutil.remove_file(f) is True
        assert not f.exists()
        assert fsutil.remove_file(f, missing_ok=True) is False
        with pytest.raises(StorageIOError):
            fsutil.remove_file(f)


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from swcmp.fsutil import exclusive_lock
    with exclusive_lock(Path(sys.argv[1]), sys.argv[2]):
        print("locked", flush=True)
        sys.stdin.readline()
    """
)


class TestLock:
    def test_non_blocking_fails_when_held_by_another_process(self, tmp_path: Path) -> None:
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(tmp_path), "gw1"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            with (
                pytest.raises(LockHeldError) as info,
                fsutil.exclusive_lock(tmp_path, "gw1", blocking=False),
            ):
                pytest.fail("lock acquired although held")
            assert "another swcmp run" in str(info.value)
            assert "session gw1" in str(info.value)
            assert info.value.holder_pid == holder.pid
            assert info.value.name == "gw1"
            # A different name is independent.
            with fsutil.exclusive_lock(tmp_path, "gw2", blocking=False):
                pass
        finally:
            assert holder.stdin is not None
            holder.stdin.write("\n")
            holder.stdin.close()
            holder.wait(timeout=10)
        # Released when the holder exits.
        with fsutil.exclusive_lock(tmp_path, "gw1", blocking=False) as path:
            assert path == tmp_path / "gw1.lock"
            assert path.read_text().strip() == str(os.getpid())

    def test_released_after_block_and_on_error(self, tmp_path: Path) -> None:
        with pytest.raises(RuntimeError), fsutil.exclusive_lock(tmp_path, "s"):
            raise RuntimeError("boom")
        with fsutil.exclusive_lock(tmp_path, "s", blocking=False):
            pass

    def test_same_process_second_open_conflicts(self, tmp_path: Path) -> None:
        with (
            fsutil.exclusive_lock(tmp_path, "s"),
            pytest.raises(LockHeldError, match="holds the lock for the test lock"),
            fsutil.exclusive_lock(tmp_path, "s", blocking=False, what="the test lock"),
        ):
            pytest.fail("lock acquired twice")

    def test_lock_dir_created_private(self, tmp_path: Path) -> None:
        lock_dir = tmp_path / "state" / "locks"
        with fsutil.exclusive_lock(lock_dir, "s"):
            assert _mode(lock_dir) == 0o700
            assert _mode(lock_dir / "s.lock") == 0o600
