"""A software TPM 2.0 behind tpm2-pkcs11, for tests (Debian swtpm, tpm2-abrmd, tpm2-pkcs11).

swtpm emulates the TPM on loopback ports. tpm2-pkcs11 runs several TPM commands
per operation and leaves objects loaded, which a bare TPM (three transient slots)
runs out of ("out of memory for object contexts"), so a resource manager sits in
between: tpm2-abrmd, on a private D-Bus session bus that this module starts.
tpm2_ptool makes the PKCS#11 store and one token per test.

As with SoftHSM, the module reads its environment (``TPM2_PKCS11_TCTI``,
``TPM2_PKCS11_STORE``, ``DBUS_SESSION_BUS_ADDRESS``) once per process, so the
TPM is started once per test run (on first use) and set in ``os.environ``,
where swcmp, its children and charon (tests/charon_net.py) find it.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from softhsm import Token

MODULE = Path("/usr/lib/x86_64-linux-gnu/libtpm2_pkcs11.so.1")
TOOLS = ("swtpm", "tpm2-abrmd", "tpm2_ptool", "dbus-daemon")
_started: dict[str, object] = {}
_procs: list[subprocess.Popen[bytes]] = []


def unavailable() -> str | None:
    """Why the software TPM cannot be used here, or None."""
    if not MODULE.exists():
        return f"tpm2-pkcs11 is not installed ({MODULE}; apt install libtpm2-pkcs11-1)"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} is not installed (see scripts/test's package list)"
    return None


def _free_port() -> int:
    """A free port whose successor is free too (swtpm's server and control ports)."""
    for _ in range(50):
        with socket.socket() as s, socket.socket() as t:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            try:
                t.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two free adjacent ports on loopback")


def _stop() -> None:
    for proc in reversed(_procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
    d = _started.get("dir")
    if isinstance(d, Path):
        shutil.rmtree(d, ignore_errors=True)


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=60)


def _setup() -> Path:
    if "dir" in _started:
        return Path(str(_started["dir"]))
    d = Path(tempfile.mkdtemp(prefix="swcmp-tpm-"))
    _started["dir"] = d
    atexit.register(_stop)
    (d / "state").mkdir()
    (d / "store").mkdir()
    port = _free_port()
    _procs.append(subprocess.Popen(
        ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={d / 'state'}",
         "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
         # the swtpm TCTI finds the control channel at the next port
         "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
         "--flags", "not-need-init,startup-clear"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    deadline = time.monotonic() + 20
    while True:  # tpm2-abrmd gives up at once when swtpm does not answer yet
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("swtpm did not open its port") from None
            time.sleep(0.1)
    bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1",
                            f"--address=unix:path={d / 'bus'}"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    _procs.append(bus)
    assert bus.stdout is not None
    address = bus.stdout.readline().decode().strip()
    os.environ["DBUS_SESSION_BUS_ADDRESS"] = address
    _procs.append(subprocess.Popen(
        ["tpm2-abrmd", "--session", "--allow-root", f"--tcti=swtpm:host=127.0.0.1,port={port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    os.environ["TPM2_PKCS11_TCTI"] = "tabrmd:bus_type=session"
    os.environ["TPM2TOOLS_TCTI"] = "tabrmd:bus_type=session"
    os.environ["TPM2_PKCS11_STORE"] = str(d / "store")
    deadline = time.monotonic() + 20
    while True:  # the resource manager registers on the bus after a moment
        if subprocess.run(["tpm2_getrandom", "4"], capture_output=True).returncode == 0:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the software TPM (swtpm + tpm2-abrmd) did not come up")
        time.sleep(0.2)
    _run("tpm2_ptool", "init", "--path", str(d / "store"))
    return d


def new_token(where: Path) -> Token:
    """A fresh tpm2-pkcs11 token (under the TPM's primary object) with a 0600 PIN file."""
    d = _setup()
    label = f"tpm{secrets.token_hex(3)}"
    pin = secrets.token_hex(6)
    _run("tpm2_ptool", "addtoken", "--pid=1", f"--label={label}", f"--userpin={pin}",
         f"--sopin={secrets.token_hex(6)}", "--path", str(d / "store"))
    pin_file = where / f"{label}.pin"
    fd = os.open(pin_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pin + "\n")
    return Token(label, pin, pin_file, MODULE)
