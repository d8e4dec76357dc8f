"""This node's role in an active/standby pair, read from a role file or command.

strongSwan has no role query of its own (STRONGSWAN.md): the role comes from
whatever runs the failover, typically a keepalived notify script that writes
MASTER, BACKUP, FAULT or STOP into a file (``contrib/keepalived-notify.sh``).

The rule is safe by default: a node requests certificates only while its role
source positively says it is active (MASTER, ACTIVE, PRIMARY). A role source
that cannot be read, is empty, or names a role swcmp does not know counts as
standby, and :attr:`Role.problem` says why, so that ``swcmp status`` and the
metrics can show it. Without any role source configured, the node is active.
"""

from __future__ import annotations

import logging
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["ACTIVE_ROLES", "STANDBY_ROLES", "Role", "read_role"]

#: Roles in which this node renews.
ACTIVE_ROLES = frozenset({"MASTER", "ACTIVE", "PRIMARY"})
#: Roles in which it requests nothing (keepalived writes STOP when it shuts down).
STANDBY_ROLES = frozenset({"BACKUP", "FAULT", "STANDBY", "PASSIVE", "SLAVE", "STOP",
                           "SECONDARY"})
#: At most this much of a role file or command output is read.
MAX_ROLE_BYTES = 4096
#: How long a role command may take.
COMMAND_TIMEOUT = 10.0
_WORD = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass(frozen=True)
class Role:
    """What the role source said.

    Attributes:
        role: the role word in upper case; None without a role source, or when
            the source could not be read or gave no usable word.
        standby: whether this node must request nothing.
        source: the role source for people (``role file /run/swcmp/role``), or
            empty when none is configured.
        problem: why the source was not usable (then ``standby`` is True), or empty.
    """

    role: str | None
    standby: bool
    source: str = ""
    problem: str = ""

    @property
    def configured(self) -> bool:
        return bool(self.source)

    def describe(self) -> str:
        """One line for people, e.g. ``HA role BACKUP (role file /run/swcmp/role): standby``."""
        if not self.configured:
            return "no HA role source: this node renews"
        if self.problem:
            return f"{self.problem}: acting as standby to be safe (requests nothing)"
        what = "standby, requests nothing" if self.standby else "active, renews"
        return f"HA role {self.role} ({self.source}): {what}"

    def standby_reason(self) -> str:
        """Why a session is skipped on this node, for reports and ``status``."""
        if self.problem:
            return f"skipped: standby ({self.problem})"
        return f"skipped: standby (this node's HA role is {self.role})"


def _classify(text: str, source: str) -> Role:
    words = text.split()
    if not words:
        return Role(None, True, source, f"the {source} is empty")
    word = words[0]
    if not _WORD.fullmatch(word):
        return Role(None, True, source, f"the {source} does not start with a role word")
    role = word.upper()
    if role in ACTIVE_ROLES:
        return Role(role, False, source)
    if role in STANDBY_ROLES:
        return Role(role, True, source)
    return Role(role, True, source, f"the {source} names an unknown role {role!r} "
                "(expected MASTER, BACKUP, FAULT or STOP)")


def read_role(role_file: Path | None = None, role_command: str | None = None) -> Role:
    """Read the role from ``role_file`` or else ``role_command`` (never raises).

    Args:
        role_file: a file whose first word is the role.
        role_command: a shell command that prints the role; it must exit 0
            within :data:`COMMAND_TIMEOUT` seconds.
    """
    if role_file is not None:
        source = f"role file {role_file}"
        try:
            with role_file.open("rb") as f:
                data = f.read(MAX_ROLE_BYTES)
        except OSError as e:
            problem = f"the HA {source} is unreadable ({e.strerror or e})"
            log.warning("%s: acting as standby to be safe", problem)
            return Role(None, True, source, problem)
        role = _classify(data.decode("utf-8", "replace"), f"HA {source}")
    elif role_command is not None:
        source = f"role command {role_command!r}"
        try:
            res = subprocess.run(role_command, shell=True, capture_output=True,
                                 timeout=COMMAND_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            problem = f"the HA {source} failed ({e})"
            log.warning("%s: acting as standby to be safe", problem)
            return Role(None, True, source, problem)
        if res.returncode != 0:
            problem = f"the HA {source} exited {res.returncode}"
            log.warning("%s: acting as standby to be safe", problem)
            return Role(None, True, source, problem)
        role = _classify(res.stdout[:MAX_ROLE_BYTES].decode("utf-8", "replace"),
                         f"HA {source}")
    else:
        return Role(None, False)
    if role.problem:
        log.warning("%s: acting as standby to be safe", role.problem)
    return role
