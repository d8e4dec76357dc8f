# Copyright: swcmp contributors
# MIT License (see the repository's pyproject.toml)
"""Running the installed ``swcmp`` command with ``--json`` for the swcmp.gateway modules.

The modules never import swcmp: they speak to the command line in the stable JSON
shapes of swcmp's docs/cli.md, so that the collection works with any installed swcmp
(Debian package, venv, another Python) and the target needs nothing else.
"""

from __future__ import annotations

import json
import os
import re

#: Options shared by every module: where swcmp is and which directories it uses.
COMMON_ARGS = dict(
    executable=dict(type="str", default="swcmp"),
    config_dir=dict(type="path"),
    state_dir=dict(type="path"),
    swanctl_dir=dict(type="path"),
    vici=dict(type="str"),
)

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class SwcmpError(Exception):
    """swcmp refused or failed: its ``error`` and ``hint`` and the whole JSON answer."""

    def __init__(self, command, rc, data):
        self.command = command
        self.rc = rc
        self.data = data if isinstance(data, dict) else {"error": str(data)}
        Exception.__init__(self, self.data.get("error") or "swcmp failed")

    def fail_args(self):
        out = dict(msg="swcmp %s: %s" % (" ".join(self.command), self.data.get("error")),
                   rc=self.rc, hint=self.data.get("hint"))
        if "checks" in self.data:
            out["checks"] = self.data["checks"]
        return out


class Swcmp(object):
    """One target's swcmp: the executable and the global options of the module's params."""

    def __init__(self, module):
        self.module = module
        params = module.params
        exe = params["executable"]
        found = exe if os.path.sep in exe else module.get_bin_path(exe)
        if not found:
            module.fail_json(msg="swcmp is not installed (no '%s' in PATH); install it "
                                 "with the swcmp.gateway.swcmp role or give executable" % exe)
        self.argv = [found]
        for name, option in (("config_dir", "--config-dir"), ("state_dir", "--state-dir"),
                             ("swanctl_dir", "--swanctl-dir"), ("vici", "--vici")):
            if params.get(name):
                self.argv += [option, str(params[name])]

    def run(self, *args, **kwargs):
        """Run ``swcmp --json ARGS``; return the parsed answer, raise SwcmpError on failure.

        ``ok_rc`` lists exit codes whose answer is returned rather than raised
        (``session check`` exits 1 with its report).
        """
        ok_rc = kwargs.get("ok_rc", (0,))
        argv = self.argv + ["--json"] + [str(a) for a in args]
        rc, out, err = self.module.run_command(argv, environ_update={"SWCMP_JSON": "1"})
        try:
            data = json.loads(out) if out.strip() else {}
        except ValueError:
            data = {"error": "swcmp printed no JSON: %s" % (err or out).strip()[-500:]}
        if rc not in ok_rc:
            if not isinstance(data, dict) or "error" not in data:
                data = {"error": (err or out).strip()[-500:] or "exit %d" % rc}
            raise SwcmpError(list(args), rc, data)
        return data

    def sessions(self):
        """``session list``: the sessions by name, and the unreadable session files."""
        listing = self.run("session", "list")
        return ({s["name"]: s for s in listing.get("sessions", [])},
                listing.get("errors", []))

    def status(self):
        """``status``: every session's status entry by name (the facts)."""
        data = self.run("status")
        return {s["session"]: s for s in data.get("sessions", [])}


def normalize_seconds(value):
    """``86400``, ``"86400"``, ``"1d"``, ``"24h"`` -> ``86400``: a duration in seconds, as
    swcmp shows it; what is no duration is returned as given (swcmp refuses it with a
    clear message)."""
    if value is None or isinstance(value, (bool, int)):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    m = _DURATION.match(text)
    if not m or not any(m.groups()):
        return value
    return sum(int(g or 0) * size for g, size in zip(m.groups(), (86400, 3600, 60, 1)))


def normalize_expire_time(value):
    """``50``, ``"50"``, ``"50%"`` -> ``"50%"``; ``"36h"`` -> ``"1d12h"`` as swcmp shows it."""
    if value is None:
        return None
    text = str(value).strip()
    if text.endswith("%"):
        text = text[:-1].strip()
    if text.isdigit():
        return "%d%%" % int(text)
    m = _DURATION.match(text)
    if not m or not any(m.groups()):
        return str(value)  # swcmp refuses it with a clear message
    seconds = sum(int(g or 0) * size for g, size in zip(m.groups(), (86400, 3600, 60, 1)))
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            out.append("%d%s" % (count, unit))
    return "".join(out) or "0s"


def normalize_san(value):
    """``dns:gw1`` -> ``DNS:gw1`` (swcmp stores the type in capitals)."""
    kind, sep, rest = str(value).partition(":")
    return kind.upper() + sep + rest if sep else str(value)


#: The body types an operation URL may name, by the RFC 9483 label swcmp stores.
_OPERATION_ALIASES = {"ir": "initialization", "cr": "certification", "kur": "keyupdate",
                      "p10cr": "pkcs10", "rr": "revocation"}


def normalize_operation_url(value):
    """``KUR=https://ca/kur`` -> ``keyupdate=https://ca/kur`` (as swcmp stores it)."""
    name, sep, url = str(value).partition("=")
    if not sep:
        return str(value)
    name = name.strip().lower()
    return _OPERATION_ALIASES.get(name, name) + "=" + url.strip()


def needs_initial(entry):
    """Whether the session has no usable certificate: none yet, unreadable, expired or
    revoked."""
    if entry is None:
        return True
    cert = entry.get("certificate")
    if not cert or cert.get("error") or cert.get("expired"):
        return True
    ca = entry.get("ca") or {}
    return bool(ca.get("current_revoked"))
