"""swcmp's errors: the CMP library's (one root, :class:`SwcmpError`, re-exported here
so that the application imports every error from this one module) and the
application's own, for storage, session files and locks.

No exception ever carries a secret (MAC secret, private key) in its text or attributes.
"""

from __future__ import annotations

from swcmp.cmp.errors import (
    FAILURE_BIT as FAILURE_BIT,
)
from swcmp.cmp.errors import (
    FAILURE_INFO as FAILURE_INFO,
)
from swcmp.cmp.errors import (
    PKI_STATUS as PKI_STATUS,
)
from swcmp.cmp.errors import (
    CertificateError as CertificateError,
)
from swcmp.cmp.errors import (
    CertificateRejectedError as CertificateRejectedError,
)
from swcmp.cmp.errors import (
    CMPErrorResponse as CMPErrorResponse,
)
from swcmp.cmp.errors import (
    ConfigError as ConfigError,
)
from swcmp.cmp.errors import (
    ConnectError as ConnectError,
)
from swcmp.cmp.errors import (
    ContentTypeError as ContentTypeError,
)
from swcmp.cmp.errors import (
    HTTPStatusError as HTTPStatusError,
)
from swcmp.cmp.errors import (
    NoChainError as NoChainError,
)
from swcmp.cmp.errors import (
    PollingTimeoutError as PollingTimeoutError,
)
from swcmp.cmp.errors import (
    ProtectionError as ProtectionError,
)
from swcmp.cmp.errors import (
    ProtocolError as ProtocolError,
)
from swcmp.cmp.errors import (
    ResponseTooLargeError as ResponseTooLargeError,
)
from swcmp.cmp.errors import (
    SwcmpError as SwcmpError,
)
from swcmp.cmp.errors import (
    TimeoutError_ as TimeoutError_,
)
from swcmp.cmp.errors import (
    TransportError as TransportError,
)
from swcmp.cmp.errors import (
    failure_names as failure_names,
)


class StorageError(SwcmpError):
    """Reading or writing keys, certificates or state on disk failed."""


class SessionFileError(ConfigError):
    """A session file cannot be read, does not parse, or holds a bad value.

    ``path`` names the file; ``line`` is the 1-based line when it is known.
    """

    def __init__(self, message: str, *, path: str, line: int | None = None, hint: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        if hint:
            self.hint = hint


class StorageIOError(StorageError):
    """An operating-system call on ``path`` failed; ``errno`` says how (None if unknown)."""

    def __init__(
        self, message: str, *, path: str, errno: int | None = None, hint: str = ""
    ) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno
        if hint:
            self.hint = hint


class LockHeldError(StorageError):
    """Another process holds the exclusive lock ``name`` (e.g. a session)."""

    def __init__(
        self,
        message: str,
        *,
        name: str,
        lock_path: str,
        holder_pid: int | None = None,
        hint: str = "",
    ) -> None:
        super().__init__(message)
        self.name = name
        self.lock_path = lock_path
        self.holder_pid = holder_pid
        if hint:
            self.hint = hint


class RenewalError(SwcmpError):
    """A renewal failed; the live pair is unchanged (or was restored)."""


class NeedsInitialRequest(RenewalError):
    """The certificate is missing or expired: a key update cannot work."""


class TransactionAbandoned(RenewalError):
    """A CA transaction waited past the session's poll_limit (or was resumed too often)
    and was abandoned: its staged key is destroyed; the next run starts a new one."""
