"""File-system helpers: atomic writes, directories, and per-name exclusive locks.

Every failure comes out as a :class:`~swcmp.errors.StorageIOError` (a
``StorageError``) naming the path and saying what to do, never as a bare
``OSError``: callers and the CLI only ever deal with swcmp errors.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Generic, TypeVar

from swcmp.errors import LockHeldError, StorageIOError

T = TypeVar("T")

__all__ = [
    "atomic_write",
    "ensure_dir",
    "exclusive_lock",
    "remove_file",
    "storage_error",
]

log = logging.getLogger(__name__)

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


def _hint(err: int | None, path: Path) -> str:
    where = path.parent if path.parent != path else path
    hints = {
        errno.ENOSPC: f"the file system holding {where} is full: free some space and retry",
        errno.EDQUOT: f"the disk quota for {where} is exhausted: free some space and retry",
        errno.EACCES: f"permission denied: run swcmp as root or fix the permissions of {where}",
        errno.EPERM: f"operation not permitted: run swcmp as root or check attributes of {where}",
        errno.EROFS: f"{where} is on a read-only file system: remount it read-write "
        "or point swcmp at another directory",
        errno.ENOENT: f"{where} does not exist: create it or check the configured directory",
        errno.ENOTDIR: f"a component of {where} is not a directory: check the configured path",
        errno.EISDIR: f"{path} is a directory: remove it or choose another name",
        errno.ELOOP: f"{path} is a symbolic link: swcmp does not write through links; remove it",
        errno.EIO: f"the disk holding {where} reported an I/O error: check the kernel log",
        errno.EEXIST: f"{path} already exists",
    }
    return hints.get(err or 0, "")


def storage_error(exc: OSError, path: Path, action: str) -> StorageIOError:
    """Turn an ``OSError`` into a StorageIOError that names ``path`` and a fix.

    Args:
        exc: the error the operating system gave.
        path: the file or directory the operation was about.
        action: what was being done, e.g. ``"write"`` or ``"create directory"``.
    """
    why = exc.strerror or str(exc)
    return StorageIOError(
        f"cannot {action} {path}: {why}",
        path=str(path),
        errno=exc.errno,
        hint=_hint(exc.errno, path),
    )


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as e:
        # Some file systems (e.g. certain network or FUSE ones) refuse fsync on
        # a directory; the rename itself already happened, so carry on.
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def replace(src: Path, dst: Path) -> None:
    """Rename ``src`` over ``dst`` atomically and durably (same directory).

    Raises:
        StorageIOError: the rename or the directory sync failed.
    """
    try:
        os.replace(src, dst)
        _fsync_dir(dst.parent)
    except OSError as e:
        raise storage_error(e, dst, "replace") from e


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        # os.write may write less than asked (signals, pipes, quotas): loop.
        written = os.write(fd, view)
        view = view[written:]


def atomic_write(
    path: Path, data: bytes, *, mode: int = PUBLIC_MODE, exclusive: bool = False
) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a mix.

    The data goes to a temporary file in the same directory (so the final step
    is a rename within one file system), which is fsynced, renamed over
    ``path`` and followed by an fsync of the directory, so the new name
    survives a power loss. The temporary file is created with ``mode`` from
    the start (``O_CREAT`` with ``mode``, then ``fchmod`` while it is still
    empty to undo the umask), so a private key is never readable by others,
    not even for a moment. On any failure the temporary file is removed and
    the previous ``path`` is left exactly as it was.

    Args:
        path: the file to write. Symbolic links are replaced, not followed.
        data: the complete new content.
        mode: permission bits, e.g. ``0o600`` for private keys.
        exclusive: fail with errno ``EEXIST`` instead of replacing an existing
            file (the final step is then a hard link, which cannot overwrite).

    Raises:
        StorageIOError: the write failed (disk full, permissions, read-only
            file system...), with the path and what to do.
    """
    path = Path(path)
    directory = path.parent
    tmp = directory / f".{path.name}.tmp-{secrets.token_hex(6)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    except OSError as e:
        raise storage_error(e, path, "write") from e
    try:
        try:
            if os.fstat(fd).st_mode & 0o7777 != mode:
                os.fchmod(fd, mode)  # still empty: only the umask is undone here
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise storage_error(e, path, "write") from e
    except BaseException:
        # KeyboardInterrupt and friends: still leave no temporary file behind.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:
        _fsync_dir(directory)
    except OSError as e:
        raise storage_error(e, directory, "sync directory") from e


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """The file's inode, size and modification time (None: no such file): whether it was
    replaced since (swcmp replaces its files, never rewrites them in place)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class HeldWrites(Generic[T]):
    """What this process meant to write to files it could not write (a full disk, a
    read-only file system), read instead of those files until a write succeeds, so that
    a failure count and a backoff hold; each with the file's stamp then, so that a file
    another process replaced since is read again."""

    def __init__(self) -> None:
        #: str(path) -> (the file's stamp when the write failed, the value meant)
        self.held: dict[str, tuple[tuple[int, int, int] | None, T]] = {}

    def get(self, path: Path) -> T | None:
        """A copy of what is held for ``path`` (None: nothing, or the file changed since)."""
        item = self.held.get(str(path))
        if item is None:
            return None
        if item[0] != file_stamp(path):
            del self.held[str(path)]  # written by another process since
            return None
        return copy.deepcopy(item[1])

    def hold(self, path: Path, value: T) -> None:
        """``value`` could not be written to ``path``: read it instead until it is."""
        self.held[str(path)] = (file_stamp(path), copy.deepcopy(value))

    def written(self, path: Path) -> None:
        """``path`` was written: nothing held for it any more."""
        self.held.pop(str(path), None)


def ensure_dir(path: Path, *, mode: int = 0o755) -> Path:
    """Create ``path`` (and parents) if missing; return it.

    An existing directory keeps its mode: an administrator may have tightened it.

    Raises:
        StorageIOError: it cannot be created, or exists and is not a directory.
    """
    path = Path(path)
    try:
        # Missing parents get 0o755 (less under a stricter umask), never Path.mkdir's
        # 0o777: under umask 000 that made the state directory world-writable.
        for parent in reversed(path.parents):
            if not parent.is_dir():
                parent.mkdir(mode=0o755, exist_ok=True)
        path.mkdir(mode=mode, exist_ok=True)
    except FileExistsError as e:
        raise StorageIOError(
            f"cannot create directory {path}: a file of that name exists",
            path=str(path),
            errno=e.errno,
            hint="remove or rename that file, or configure another directory",
        ) from e
    except OSError as e:
        raise storage_error(e, path, "create directory") from e
    return path


def remove_file(path: Path, *, missing_ok: bool = False) -> bool:
    """Remove ``path`` and fsync its directory; return False if it was already gone.

    Raises:
        StorageIOError: it cannot be removed, or is missing and ``missing_ok`` is False.
    """
    path = Path(path)
    try:
        os.unlink(path)
    except FileNotFoundError as e:
        if missing_ok:
            return False
        raise storage_error(e, path, "remove") from e
    except OSError as e:
        raise storage_error(e, path, "remove") from e
    try:
        _fsync_dir(path.parent)
    except OSError as e:
        raise storage_error(e, path.parent, "sync directory") from e
    return True


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def lock_holder(lock_dir: Path, name: str) -> int | None:
    """Whether another process holds ``lock_dir/NAME.lock`` now: its pid (0 if it wrote
    none), or None when the lock is free or was never made.

    Read-only: the lock file is opened for reading and probed with a shared,
    non-blocking ``flock`` that is released at once; nothing is created.
    """
    try:
        fd = os.open(Path(lock_dir) / f"{name}.lock", os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive_lock(
    lock_dir: Path, name: str, *, blocking: bool = True, what: str | None = None
) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``lock_dir/NAME.lock`` for the ``with`` block.

    The lock is released by the kernel when the process exits, however it
    exits, so a crashed run never leaves a stale lock behind. The lock file
    holds the holder's pid for diagnostics only. It is deliberately never
    deleted: removing it while another process waits on the old inode would
    let two processes "hold" the lock at once.

    ``flock`` locks belong to the open file, so taking the same lock twice in
    one process through two ``with`` blocks blocks (or fails) like any other
    contender: do not nest the same name.

    Args:
        lock_dir: the directory for lock files; created (0700) if missing.
        name: what to lock, e.g. a session name; must be a valid file name.
        blocking: wait for the lock (True) or fail at once (False).
        what: how to describe the lock in errors; ``"session NAME"`` by default.

    Yields:
        The lock file's path.

    Raises:
        LockHeldError: ``blocking`` is False and another process holds the lock.
        StorageIOError: the lock file cannot be created or locked.
    """
    described = what or f"session {name}"
    ensure_dir(lock_dir, mode=0o700)
    lock_path = Path(lock_dir) / f"{name}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise storage_error(e, lock_path, "open lock file") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            pid = _read_pid(fd)
            holder = f" (pid {pid})" if pid else ""
            raise LockHeldError(
                f"another swcmp run{holder} holds the lock for {described}",
                name=name,
                lock_path=str(lock_path),
                holder_pid=pid,
                hint="wait for it to finish and retry; the lock is released when that "
                f"process exits ({lock_path})",
            ) from None
        except OSError as e:
            raise storage_error(e, lock_path, "lock") from e
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError:
            # The pid is only a diagnostic aid; a full disk must not stop the run.
            log.debug("could not record pid in %s", lock_path)
        log.debug("locked %s (%s)", described, lock_path)
        yield lock_path
    finally:
        # Closing the descriptor releases the flock.
        os.close(fd)
