"""End to end: the ``swcmp`` command line renews a gateway's certificate under real IKE.

Issue 6, "Proof". Two charon 5.9.8 daemons run in two network namespaces
(tests/charon_net.py); both start without credentials. Every step is the real
``swcmp`` command line run as a subprocess (``python -m swcmp --config-dir ..
--state-dir .. --swanctl-dir <node's swanctl dir> --vici <node's socket> ...``)
against the embedded CMP test CA (:class:`swcmp.testca.TestCA`, in this
process, on loopback):

* B (session ``gw-b``) and A (session ``gw-a``) enroll with ``swcmp request
  initial`` (IR protected by a MAC; the CA certificate comes with the answer),
  which writes the files and hot-loads them into each charon;
* A establishes childless IKE SAs with B (this kernel has no ESP); with charon 6.0 in
  pinned mode, IKE SAs with CHILD_SAs (ESP in charon: kernel-libipsec), since 6.0
  closes the childless IKE SAs of a connection that load-conn replaces;
* A's certificate is renewed by a KUR, re-certifying the same key or a fresh
  one (``--regenerate``), under ``swcmp renew --force`` and under ``swcmp
  serve`` with a short certificate lifetime; in identity mode (``local.id``)
  and in pinned mode (``local.certs = gw-a.crt``);
* then: the IKE SAs established before are still up with the same SPIs, a new
  IKE SA authenticates A with the new serial as B sees it, A's key file and
  charon's loaded keys are in step, and after a restart of A's charon the start
  hook (``swcmp hook charon-start`` as a ``charon.start-scripts`` entry)
  restores the new pair so that a new IKE SA still works.

Faults: charon stopped (or crashed) during the renewal, charon refusing the
new key, charon restarted in the middle of the swap. The last two are injected
by :class:`ViciProxy`, a VICI socket in front of A's that forwards everything
but can answer ``load-key`` with charon's own refusal or restart charon when a
given command arrives: deterministic where a real race would not be.

A measurement is printed (run with ``-s`` to see it; lines start with
``E2E-MEASURE``): the time from the certificate file's commit (its mtime) to
the first new IKE SA in which B saw the new serial, and the number of IKE SAs
dropped by the renewal (goal: zero). A prober thread sets up IKE SAs back to
back during the renewal for this.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from vici.protocol import Message

from charon_net import CharonNet, CharonNode, IkeSa, available, wait_for
from swcmp.strongswan import key_id_from_cert_pem, key_id_from_public_key
from swcmp.testca import CAConfig, TestCA
from testpaths import REPO

_UNAVAILABLE = available()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or ""),
]

MAC_REF = b"e2e-ref-4711"
MAC_SECRET = b"e2e-secret-not-for-output"
LONG = timedelta(hours=1)
A_SESSION, B_SESSION = "gw-a", "gw-b"


# --------------------------------------------------------------------------- swcmp, the CLI


@dataclass
class Gateway:
    """One gateway's swcmp directories; runs ``python -m swcmp`` against its charon."""

    root: Path
    node: CharonNode
    session: str
    runs: list[tuple[list[str], float]] = field(default_factory=list)
    #: the python that charon's start script runs swcmp with (charon from another
    #: Debian release runs it inside that root: its Python's environment)
    hook_python: str = sys.executable

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def state_dir(self) -> Path:
        return self.root / "var"

    @property
    def swanctl_dir(self) -> Path:
        return self.node.swanctl_dir

    @property
    def key_file(self) -> Path:
        return self.swanctl_dir / "private" / f"{self.session}.key"

    @property
    def cert_file(self) -> Path:
        return self.swanctl_dir / "x509" / f"{self.session}.crt"

    def argv(self, *args: str, vici: str | None = None, python: str = sys.executable
             ) -> list[str]:
        return [python, "-m", "swcmp", "--config-dir", str(self.config_dir),
                "--state-dir", str(self.state_dir), "--swanctl-dir", str(self.swanctl_dir),
                "--vici", vici or self.node.uri, *args]

    def run(self, *args: str, code: int | None = 0, vici: str | None = None
            ) -> subprocess.CompletedProcess[str]:
        argv = self.argv(*args, vici=vici)
        start = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
        self.runs.append((list(args), time.monotonic() - start))
        out = f"$ swcmp {shlex.join(args)}\n{proc.stdout}{proc.stderr}"
        print(out)  # shown when a test fails
        assert MAC_SECRET.decode() not in out
        assert "PRIVATE KEY" not in out
        if code is not None:
            assert proc.returncode == code, out
        return proc

    def json(self, *args: str, code: int | None = 0, vici: str | None = None) -> Any:
        return json.loads(self.run("--json", *args, code=code, vici=vici).stdout)

    def hook_command(self) -> str:
        """``swcmp hook charon-start`` as a charon.start-scripts value."""
        return shlex.join(self.argv("-v", "hook", "charon-start", python=self.hook_python))

    def enroll(self, ca: TestCA, secret_file: Path, *extra: str) -> dict[str, Any]:
        """``session create`` + ``request initial`` (IR with MAC); returns the IR's JSON."""
        ident = self.node.identity
        self.run("session", "create", self.session,
                 "--entity", f"CN={ident},O=swcmp e2e", "--san", f"DNS:{ident}",
                 "--ca-name", ca.ca_cert.subject.rfc4514_string(), "--server-url", ca.url,
                 "--mac-ref", MAC_REF.decode(), "--mac-secret-file", str(secret_file),
                 "--key-type", "ecdsa:p256", *extra)
        ir: dict[str, Any] = self.json("request", "initial", self.session)
        assert ir["ok"] and ir["action"] == "ir", ir
        return ir

    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_file.read_bytes())

    def serial(self) -> int:
        return self.cert().serial_number

    def key_id(self) -> str:
        """charon's id of the key in the private/ file."""
        key = serialization.load_pem_private_key(self.key_file.read_bytes(), None)
        return key_id_from_public_key(key.public_key())

    def status(self) -> dict[str, Any]:
        entries = self.json("status", self.session)["sessions"]
        assert len(entries) == 1
        return dict(entries[0])


@dataclass
class E2E:
    """The CA, the two charons and the two gateways' swcmp directories."""

    tmp: Path
    net: CharonNet
    ca: TestCA
    a: Gateway
    b: Gateway
    secret_file: Path
    #: the strongSwan release of both charons
    release: str = "5.9"

    def ca_config(self, validity: timedelta) -> None:
        """Restart the CA (same directory and port) issuing certificates for ``validity``."""
        port = self.ca.port
        self.ca.stop()
        self.ca = TestCA(self.tmp / "ca", port=port,
                         config=CAConfig(mac_ref=MAC_REF, mac_secret=MAC_SECRET,
                                         validity=validity))
        self.ca.start()

    def use_hook(self, *, pinned: bool = False) -> None:
        """Make ``swcmp hook charon-start`` A's charon.start-scripts entry (next start)."""
        self.net.a.start_scripts["swcmp"] = self.a.hook_command()
        self.write_a_config(pinned=pinned)

    def write_a_config(self, *, pinned: bool) -> None:
        self.net.a.write_config(pinned=pinned, cert_file=f"{A_SESSION}.crt")

    def pin(self) -> None:
        """Switch A to pinned mode: local.certs names swcmp's certificate file."""
        self.write_a_config(pinned=True)
        self.net.a.swanctl("--load-conns")
        with self.net.a.session() as s:
            (conn,) = [dict(c)["gw"] for c in s.list_conns()]
        local = next(v for k, v in conn.items() if k.startswith("local") and isinstance(v, dict))
        assert local.get("certs"), conn  # the connection holds the pinned certificate


@pytest.fixture
def e2e(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[E2E]:
    """Both charons up without credentials; B enrolled with swcmp; A not yet.

    Parametrized indirectly with a strongSwan release: "5.9" (the machine's, default) or
    "6.0" (Debian 13's charon from tests/debian_root.py, its start hook run by swcmp in
    Debian 13's Python).
    """
    release = getattr(request, "param", "5.9")
    root = hook_python = None
    if release == "6.0":
        from debian_root import trixie, trixie_venv

        root, hook_python = trixie(), trixie_venv()
    secret_file = tmp_path / "mac.secret"
    secret_file.write_bytes(MAC_SECRET + b"\n")
    secret_file.chmod(0o600)
    ca = TestCA(tmp_path / "ca", config=CAConfig(mac_ref=MAC_REF, mac_secret=MAC_SECRET,
                                                 validity=LONG))
    ca.start()
    try:
        # 6.0: ESP in charon (kernel-libipsec), so that IKE SAs can carry CHILD_SAs
        with CharonNet(tmp_path / "net", credentials=False, root=root,
                       binds=(tmp_path, REPO), userspace_esp=release == "6.0") as net:
            print(f"charon logs: {net.a.log} {net.b.log}")
            for node in (net.a, net.b):  # the release asked for is the one running
                assert f"(strongSwan {release}." in node.log_text(), node.log_text()[:500]
            a = Gateway(tmp_path / "swcmp-a", net.a, A_SESSION)
            if hook_python is not None:
                a.hook_python = hook_python
            env = E2E(tmp_path, net, ca, a,
                      Gateway(tmp_path / "swcmp-b", net.b, B_SESSION), secret_file, release)
            env.b.enroll(ca, secret_file)
            assert env.net.b.key_ids() == {env.b.key_id()}
            try:
                yield env
            finally:
                ca = env.ca
    finally:
        ca.stop()


def enroll_a(e2e: E2E, *extra: str) -> x509.Certificate:
    """IR for A (hot-loaded by the request itself); A then authenticates with it on B."""
    ir = e2e.a.enroll(e2e.ca, e2e.secret_file, *extra)
    cert = e2e.a.cert()
    assert ir["serial"] == f"{cert.serial_number:x}"
    assert "charon uses certificate serial" in (ir["charon"] or ""), ir
    assert e2e.net.a.key_ids() == {e2e.a.key_id()}
    assert e2e.net.serial_b_saw_for_a() == cert.serial_number
    return cert


# --------------------------------------------------------------------------- IKE SAs


def established(node: CharonNode) -> dict[tuple[str, str], IkeSa]:
    """The ESTABLISHED IKE SAs of ``node`` by SPIs."""
    return {sa.spis: sa for sa in node.list_sas() if sa.state == "ESTABLISHED"}


def dropped(net: CharonNet, before: dict[tuple[str, str], IkeSa]) -> list[tuple[str, str]]:
    """SPIs of IKE SAs in ``before`` that are no longer established on A or on B."""
    on_a, on_b = established(net.a), established(net.b)
    return sorted(spis for spis in before if spis not in on_a or spis not in on_b)


@dataclass
class Probe:
    start: float
    end: float
    serial: int | None  # None: the IKE SA could not be established
    error: str = ""


class Prober:
    """Sets up IKE SAs from A back to back and records which serial B saw for each."""

    def __init__(self, net: CharonNet, pause: float = 0.01, child: str | None = None) -> None:
        self.net = net
        self.pause = pause
        #: probe with IKE SAs that carry this CHILD_SA (needs ``userspace_esp``)
        self.child = child
        self.probes: list[Probe] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.time()
            try:
                serial: int | None = self.net.serial_b_saw_for_a(self.child)
                error = ""
            except (RuntimeError, AssertionError, OSError) as e:
                serial, error = None, str(e).splitlines()[0]
            self.probes.append(Probe(start, time.time(), serial, error))
            self._stop.wait(self.pause)

    def __enter__(self) -> Prober:
        self._thread.start()
        wait_for(lambda: len(self.probes) >= 2, 20, "the first probes")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def wait_for_serial(self, serial: int, timeout: float = 20) -> None:
        wait_for(lambda: any(p.serial == serial for p in self.probes), timeout,
                 f"a new IKE SA with serial {serial:x}")

    def failures(self) -> list[Probe]:
        return [p for p in self.probes if p.serial is None]

    def first_with(self, serial: int) -> Probe:
        return next(p for p in self.probes if p.serial == serial)


def report(label: str, committed: float, prober: Prober, new_serial: int,
           lost: list[tuple[str, str]], kept: int) -> float:
    """Print the measurement; return the latency (seconds) from commit to use."""
    first = prober.first_with(new_serial)
    latency = first.end - committed
    durations = sorted(p.end - p.start for p in prober.probes)
    median = durations[len(durations) // 2]
    print(f"E2E-MEASURE {label}: certificate committed -> first new IKE SA with the new "
          f"serial: {latency * 1000:.0f} ms (probe started {(first.start - committed) * 1000:+.0f}"
          f" ms; one probe takes ~{median * 1000:.0f} ms); IKE SAs dropped: {len(lost)} of "
          f"{kept}; failed new IKE SAs during the renewal: {len(prober.failures())} of "
          f"{len(prober.probes)}")
    return latency


# --------------------------------------------------------------------------- checks


def assert_keys_in_step(e2e: E2E, *, stale: Iterable[str] = ()) -> None:
    """charon's VICI keys are the key in private/gw-a.key (plus deliberate stale keys)."""
    assert e2e.net.a.key_ids() == {e2e.a.key_id(), *stale}
    # and the certificate file belongs to that key
    assert key_id_from_cert_pem(e2e.a.cert_file.read_bytes()) == e2e.a.key_id()


def assert_restart_restores(e2e: E2E, serial: int) -> None:
    """Restart A's charon: the start-scripts hook loads the files; a new IKE SA works."""
    hooked = e2e.net.a.log_text().count("swcmp: loaded ")
    e2e.net.a.restart()  # start (start-scripts run the hook), then swanctl --load-conns
    # Wait for the hook to finish: it re-sends pinned connections last, and charon 6.0
    # closes the connection's IKE SAs without CHILD_SA (even connecting ones) whenever
    # one is loaded again, changed or not (swcmp.strongswan.releases).
    wait_for(lambda: e2e.net.a.key_ids() == {e2e.a.key_id()}
             and e2e.net.a.log_text().count("swcmp: loaded ") > hooked, 15,
             "the start hook to load A's key")
    assert "executing start script 'swcmp'" in e2e.net.a.log_text()
    assert e2e.net.serial_b_saw_for_a() == serial


# --------------------------------------------------------------------------- the proof


@pytest.mark.parametrize("e2e", ["5.9", "6.0"], ids=["strongswan-5.9", "strongswan-6.0"],
                         indirect=True)
@pytest.mark.parametrize("mode", ["identity", "pinned"])
@pytest.mark.parametrize("regenerate", [False, True], ids=["same-key", "new-key"])
def test_renew_force_keeps_sas_and_switches_to_new_cert(e2e: E2E, mode: str,
                                                        regenerate: bool) -> None:
    pinned = mode == "pinned"
    # charon 6.0 closes the IKE SAs without CHILD_SA of a connection that load-conn
    # replaces ("vici closing IKE_SA", swcmp.strongswan.releases); 5.9.8 kept them. Pinned
    # mode re-sends the connection with the new certificate, so on 6.0 the tunnels are IKE
    # SAs with a CHILD_SA (ESP in charon: this kernel has none), and one childless IKE SA
    # shows what 6.0 closes and that swcmp says so.
    closes_childless = pinned and e2e.release == "6.0"
    old = enroll_a(e2e, *(["--regenerate"] if regenerate else []))
    old_id = e2e.a.key_id()
    e2e.use_hook(pinned=pinned)
    if pinned:
        e2e.pin()
        assert e2e.net.serial_b_saw_for_a() == old.serial_number
    check = e2e.a.run("session", "check", A_SESSION)
    assert ("pinned" if pinned else "identity") in check.stdout
    # session check warns where pinned mode costs the IKE SAs without CHILD_SA
    assert ("(strongSwan 6.0 or later)" in " ".join(check.stdout.split())) is closes_childless
    if closes_childless:
        ours = [e2e.net.a.initiate_child("net") for _ in range(3)]
        mine = e2e.net.a.initiate()
    else:
        ours = [e2e.net.a.initiate() for _ in range(3)]
    before = established(e2e.net.a)
    assert all(sa.spis in before for sa in ours)

    # 6.0, pinned: the probes' IKE SAs carry a CHILD_SA too, or charon would close one
    # established just before the connection is replaced
    with Prober(e2e.net, child="net" if closes_childless else None) as prober:
        result = e2e.a.json("renew", "--force", A_SESSION)
        committed = e2e.a.cert_file.stat().st_mtime
        new_serial = e2e.a.serial()
        prober.wait_for_serial(new_serial)
    (entry,) = result["results"]
    assert entry["result"] == "renewed", entry
    assert entry["renewal"]["serial"] == f"{new_serial:x}"
    assert new_serial != old.serial_number
    charon = entry["renewal"]["charon"]
    assert f"charon uses certificate serial {new_serial:#x}" in charon, entry
    assert ("re-sent connection(s) gw" in charon) is pinned, entry  # PinnedDeployer's load-conn

    # (1) every IKE SA established before the renewal is still up, same SPIs, both ends
    # (6.0, pinned: every IKE SA with a CHILD_SA; the childless ones are closed, and said)
    childless = sorted(spis for spis, sa in before.items() if not sa.children)
    if closes_childless:
        assert mine.spis in childless
        wait_for(lambda: dropped(e2e.net, before) == childless, 10,
                 "charon 6.0 to close the childless IKE SAs")
        assert re.search(r"closing \d+ IKE SA\(s\) without CHILD_SA", charon), entry
    lost = dropped(e2e.net, before)
    report(f"renew --force, {mode} mode, {'new' if regenerate else 'same'} key", committed,
           prober, new_serial, lost, len(before))
    assert lost == (childless if closes_childless else [])
    if closes_childless:  # the tunnels still carry their CHILD_SA
        after = {sa.spis: sa for sa in e2e.net.a.list_sas()}
        assert [after[sa.spis].children for sa in ours] == [1, 1, 1]
    assert prober.failures() == []
    # (2) a new IKE SA authenticates A with the new certificate, as B sees it
    assert e2e.net.serial_b_saw_for_a() == new_serial
    # (3) A's key file and charon's loaded keys are in step
    new_id = e2e.a.key_id()
    assert (new_id != old_id) is regenerate
    stale = {old_id} if pinned and regenerate else set()  # kept for the old-config SAs
    assert_keys_in_step(e2e, stale=stale)
    status = e2e.a.status()
    assert status["last_result"]["ok"] and status["last_result"]["serial"] == f"{new_serial:x}"
    assert "charon uses certificate serial" in status["charon"], status
    # (4) after a restart of A's charon the hook restores the new pair
    assert_restart_restores(e2e, new_serial)


def test_serve_renews_short_lived_certificate(e2e: E2E) -> None:
    """``swcmp serve`` renews a certificate of 75 s (renewal due 70 s before expiry)."""
    e2e.ca_config(timedelta(seconds=75))
    old = enroll_a(e2e, "--regenerate", "--expire-time", "70s")
    assert old.not_valid_after_utc - old.not_valid_before_utc < timedelta(minutes=3)
    old_id = e2e.a.key_id()
    e2e.ca_config(LONG)  # the renewed certificate lives longer: serve renews exactly once
    e2e.use_hook()
    enabled = e2e.a.json("session", "enable-auto-update", A_SESSION)
    assert enabled["auto_update"] is True, enabled
    for _ in range(3):
        e2e.net.a.initiate()
    before = established(e2e.net.a)

    serve_log = e2e.tmp / "serve.log"
    with serve_log.open("w") as err, Prober(e2e.net) as prober:
        serve = subprocess.Popen(e2e.a.argv("-v", "serve"), stdout=subprocess.DEVNULL,
                                 stderr=err, text=True)
        try:
            wait_for(lambda: e2e.a.serial() != old.serial_number, 30, "serve to renew")
            committed = e2e.a.cert_file.stat().st_mtime
            new_serial = e2e.a.serial()
            prober.wait_for_serial(new_serial)
            wait_for(lambda: e2e.a.status()["last_result"]["serial"] == f"{new_serial:x}", 10,
                     "serve to record the renewal")
        finally:
            serve.send_signal(signal.SIGTERM)
            code = serve.wait(20)
    log_text = serve_log.read_text()
    print(log_text)
    assert code == 0, log_text
    assert f"{A_SESSION}: renewed:" in log_text, log_text
    assert e2e.a.serial() == new_serial  # once

    lost = dropped(e2e.net, before)
    report("serve, identity mode, new key, 75 s certificate", committed, prober, new_serial,
           lost, len(before))
    assert lost == [] and prober.failures() == []
    assert e2e.net.serial_b_saw_for_a() == new_serial
    assert e2e.a.key_id() != old_id
    assert_keys_in_step(e2e)
    assert e2e.a.status()["state"] == "idle"
    assert_restart_restores(e2e, new_serial)


# --------------------------------------------------------------------------- faults


_CMD_REQUEST, _CMD_RESPONSE, _EVENT = 0, 1, 7


def _recv_exact(sock: socket.socket, count: int) -> bytes | None:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _recv_frame(sock: socket.socket) -> bytes | None:
    header = _recv_exact(sock, 4)
    if header is None:
        return None
    return _recv_exact(sock, struct.unpack("!I", header)[0])


def _send_frame(sock: socket.socket, frame: bytes) -> None:
    sock.sendall(struct.pack("!I", len(frame)) + frame)


REFUSE, DROP = "refuse", "drop"


class ViciProxy:
    """A VICI socket in front of charon's that forwards everything but can inject faults.

    ``on_request(command)`` is called for every command a client sends and
    returns None (forward it), ``(REFUSE, errmsg)`` (answer ``success = no``
    like charon does, without forwarding) or ``(DROP, "")`` (hang up without an
    answer, as a dying charon does). It may act on charon first (restart it...).
    VICI is request/response, so one thread per client forwards a command and
    then the answers (events of a streamed ``list-*`` included) up to the
    command's response.
    """

    def __init__(self, path: Path, upstream: Path,
                 on_request: Callable[[str], tuple[str, str] | None]) -> None:
        self.path = path
        self.upstream = upstream
        self.on_request = on_request
        self.commands: list[str] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(8)
        self._thread = threading.Thread(target=self._accept, daemon=True, name="vici-proxy")
        self._thread.start()

    @property
    def uri(self) -> str:
        return f"unix://{self.path}"

    def vanish(self) -> None:
        """The socket disappears, as charon's does when it stops."""
        with suppress(FileNotFoundError):
            self.path.unlink()
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def close(self) -> None:
        self.vanish()
        self._thread.join(5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as up:
            client.settimeout(60)
            up.settimeout(60)
            try:
                up.connect(str(self.upstream))
            except OSError:
                return  # charon is not there: hang up
            try:
                while (frame := _recv_frame(client)) is not None:
                    if frame[0] == _CMD_REQUEST:
                        command = frame[2:2 + frame[1]].decode()
                        self.commands.append(command)
                        action = self.on_request(command)
                        if action is not None and action[0] == DROP:
                            return
                        if action is not None and action[0] == REFUSE:
                            answer = Message.serialize({"success": "no", "errmsg": action[1]})
                            _send_frame(client, bytes([_CMD_RESPONSE]) + answer)
                            continue
                    _send_frame(up, frame)
                    while (reply := _recv_frame(up)) is not None:
                        _send_frame(client, reply)
                        if reply[0] != _EVENT:
                            break
                    else:
                        return
            except OSError:
                return


@contextmanager
def vici_proxy(e2e: E2E, on_request: Callable[[str], tuple[str, str] | None]
               ) -> Iterator[ViciProxy]:
    proxy = ViciProxy(e2e.tmp / "proxy.vici", e2e.net.a.vici_path, on_request)
    try:
        yield proxy
    finally:
        proxy.close()


def _first(command: str, action: Callable[[], tuple[str, str]]
           ) -> Callable[[str], tuple[str, str] | None]:
    """An on_request that applies ``action`` to the first ``command`` only."""
    done = threading.Event()

    def on_request(name: str) -> tuple[str, str] | None:
        if name != command or done.is_set():
            return None
        done.set()
        return action()

    return on_request


def _issued(e2e: E2E) -> int:
    store = e2e.ca.engine.store
    with store.lock:
        return len(store.issued)


def _renew_failed(e2e: E2E, *args: str, vici: str) -> dict[str, Any]:
    result = e2e.a.json("renew", "--force", *args, A_SESSION, code=1, vici=vici)
    (entry,) = result["results"]
    assert entry["result"] == "failed", entry
    return dict(entry)


def _assert_old_pair_live(e2e: E2E, old: x509.Certificate, old_id: str) -> None:
    assert e2e.a.serial() == old.serial_number
    assert e2e.a.key_id() == old_id
    assert_keys_in_step(e2e)
    assert e2e.net.serial_b_saw_for_a() == old.serial_number


def assert_restored_text(message: str, mode: str) -> None:
    """The failure report says that the previous pair is back, in charon and in storage."""
    if mode == "pinned":
        assert "use the previous certificate again" in message or (
            "no connection was changed and the new key is unloaded" in message), message
    else:
        assert "the previous pair is live again" in message, message
    assert "restored in storage" in message, message


def _recover(e2e: E2E, staged_serial: int | None = None, *, stale: Iterable[str] = ()) -> int:
    """A later plain ``swcmp renew`` finishes the renewal; returns the new serial."""
    issued = _issued(e2e)
    result = e2e.a.json("renew", A_SESSION)
    (entry,) = result["results"]
    assert entry["result"] == "renewed", entry
    serial = e2e.a.serial()
    if staged_serial is not None:  # the certificate kept staged; the CA is not asked again
        assert serial == staged_serial and _issued(e2e) == issued
    assert e2e.net.serial_b_saw_for_a() == serial
    assert_keys_in_step(e2e, stale=stale)
    assert e2e.a.status()["state"] == "disabled"  # no renewal pending; auto-update is off
    return serial


@pytest.mark.parametrize("how", ["stopped", "crashed", "gone-during"])
def test_charon_unreachable_renewal_commits_and_hook_loads(e2e: E2E, how: str) -> None:
    """No VICI socket (or a dead one): the files are committed, the status says charon was
    not updated, and the start hook loads the new pair when charon comes back."""
    old = enroll_a(e2e, "--regenerate")
    old_id = e2e.a.key_id()
    e2e.use_hook()
    e2e.net.a.initiate()
    vici = e2e.net.a.uri
    with vici_proxy(e2e, lambda _: None) as proxy:
        if how == "stopped":
            e2e.net.a.stop()
            # charon 5.9.8 leaves its socket file behind; /run is emptied at boot
            e2e.net.a.vici_path.unlink()
        elif how == "crashed":
            e2e.net.a.kill()  # the socket file stays, nobody listens
            assert e2e.net.a.vici_path.exists()
        else:  # charon stops while swcmp loads the new key; its socket disappears

            def stop_charon() -> tuple[str, str]:
                e2e.net.a.stop()
                proxy.vanish()
                return DROP, ""

            proxy.on_request = _first("load-key", stop_charon)
            vici = proxy.uri
        result = e2e.a.json("renew", "--force", A_SESSION, vici=vici)
    (entry,) = result["results"]
    assert entry["result"] == "renewed", entry
    charon = entry["renewal"]["charon"]
    assert charon.startswith("charon not updated") and "loads the new pair" in charon, charon
    new_serial = e2e.a.serial()
    assert new_serial != old.serial_number and e2e.a.key_id() != old_id
    assert key_id_from_cert_pem(e2e.a.cert_file.read_bytes()) == e2e.a.key_id()
    status = e2e.a.status()
    assert status["state"] == "disabled" and status["last_result"]["ok"], status  # auto-update off
    assert status["charon"].startswith("charon not updated"), status

    e2e.net.a.stop()
    assert_restart_restores(e2e, new_serial)  # charon starts: the hook loads the new pair


def test_session_delete_revoke_unloads_the_key_from_charon(e2e: E2E) -> None:
    """Decommissioning through the CLI: the revoked pair's files are removed and its key
    leaves the running charon, so charon can no longer authenticate with it."""
    cert = enroll_a(e2e)
    key_id = e2e.a.key_id()
    assert key_id in e2e.net.a.key_ids()
    result = e2e.a.run("session", "delete", A_SESSION, "--revoke")
    assert f"unloaded the revoked key {key_id} from charon" in result.stdout, result.stdout
    assert key_id not in e2e.net.a.key_ids()
    assert not e2e.a.cert_file.exists() and not e2e.a.key_file.exists()
    # the certificate stays listed (VICI has no unload-cert), but without its key
    assert cert.serial_number not in e2e.net.a.cert_serials(e2e.net.a.identity,
                                                            with_privkey=True)
    # B's charon and key are untouched
    assert e2e.net.b.key_ids() == {e2e.b.key_id()}


@pytest.mark.parametrize("mode", ["identity", "pinned"])
def test_charon_refusing_the_new_key_keeps_old_pair(e2e: E2E, mode: str) -> None:
    """charon answers load-key of the new key with its refusal (injected by the proxy):
    the old pair stays live in charon and in storage, the report says why, and a later
    run deploys the certificate kept staged without asking the CA again."""
    old = enroll_a(e2e, "--regenerate")
    old_id = e2e.a.key_id()
    e2e.use_hook(pinned=mode == "pinned")
    if mode == "pinned":
        e2e.pin()
    ours = [e2e.net.a.initiate() for _ in range(2)]
    before = established(e2e.net.a)
    issued = _issued(e2e)
    refusal = "parsing ANY private key failed"
    with vici_proxy(e2e, _first("load-key", lambda: (REFUSE, refusal))) as proxy:
        entry = _renew_failed(e2e, vici=proxy.uri)
    # identity mode loads the old key again when restoring; pinned mode never unloads it
    assert proxy.commands.count("load-key") == (1 if mode == "pinned" else 2), proxy.commands
    message = entry["message"]
    assert f"charon refused load-key: {refusal}" in message, message
    assert_restored_text(message, mode)
    assert _issued(e2e) == issued + 1
    staged = e2e.a.state_dir / "sessions" / A_SESSION / "staging" / "new.crt"
    staged_serial = x509.load_pem_x509_certificate(staged.read_bytes()).serial_number

    assert dropped(e2e.net, before) == [] and all(sa.spis in before for sa in ours)
    _assert_old_pair_live(e2e, old, old_id)
    status = e2e.a.status()
    assert status["last_result"]["ok"] is False and "load-key" in status["last_result"][
        "message"], status
    # the reason names the command that finishes the renewal (auto-update is off here)
    assert status["state"] == "in_progress" and (
        "swcmp request keyupdate gw-a" in status["reason"]), status["reason"]

    # pinned: the old key stays loaded while the IKE SAs made with the old config are up
    new_serial = _recover(e2e, staged_serial, stale={old_id} if mode == "pinned" else set())
    assert dropped(e2e.net, before) == []
    assert_restart_restores(e2e, new_serial)


@pytest.mark.parametrize("mode", ["identity", "pinned"])
def test_charon_restarted_mid_renewal_is_finished_by_the_hook(e2e: E2E, mode: str) -> None:
    """charon restarts while swcmp swaps the pair (after load-key, at load-cert).

    The renewal loses its connection, restores the previous pair and reports it;
    meanwhile the restarted charon runs the start hook, which waits for the
    renewal's lock, finds the certificate confirmed but not committed, commits
    it and loads it: the node ends on the new pair, consistent in storage and
    charon, without asking the CA for another certificate.
    """
    old = enroll_a(e2e, "--regenerate")
    e2e.use_hook(pinned=mode == "pinned")
    if mode == "pinned":
        e2e.pin()
    e2e.net.a.initiate()

    def restart_charon() -> tuple[str, str]:
        e2e.net.a.restart()  # the hook runs at start and waits for the renewal's lock
        return DROP, ""

    with vici_proxy(e2e, _first("load-cert", restart_charon)) as proxy:
        issued = _issued(e2e)
        entry = _renew_failed(e2e, vici=proxy.uri)
    message = entry["message"]
    assert "connection to charon lost during load-cert" in message, message
    assert_restored_text(message, mode)
    assert e2e.net.a.starts == 2
    assert "executing start script 'swcmp'" in e2e.net.a.log_text()

    # the hook finishes the confirmed renewal once the failed run lets go of the lock
    wait_for(lambda: e2e.a.serial() != old.serial_number, 30, "the hook's commit")
    new_serial = e2e.a.serial()
    # the hook loads the new key, then the new certificate; the failed run's rollback
    # had loaded the old pair into the restarted charon, so a new IKE SA between the two
    # loads still presents the old certificate: wait for the new one with its key
    wait_for(lambda: e2e.net.a.key_ids() >= {e2e.a.key_id()}
             and new_serial in e2e.net.a.cert_serials(e2e.net.a.identity, with_privkey=True),
             15, "the hook's load")
    assert _issued(e2e) == issued + 1  # the KUR's certificate, and no second one
    assert e2e.net.serial_b_saw_for_a() == new_serial
    assert e2e.a.key_id() in e2e.net.a.key_ids()
    status = e2e.a.status()
    assert status["last_result"]["ok"] is True, status
    assert "finished by the charon start hook" in status["last_result"]["message"]
    assert_restart_restores(e2e, new_serial)


def test_pinned_old_key_unloaded_once_old_config_sas_are_gone(e2e: E2E) -> None:
    """The old key a pinned renewal keeps for old-config IKE SAs leaves with the last of them."""
    enroll_a(e2e, "--regenerate")
    old_id = e2e.a.key_id()
    e2e.pin()
    old_sa = e2e.net.a.initiate()
    result = e2e.a.json("renew", "--force", A_SESSION)
    assert result["results"][0]["result"] == "renewed", result
    new_id = e2e.a.key_id()
    assert e2e.net.a.key_ids() == {old_id, new_id}
    # a pass while the old-config IKE SA is up keeps the old key
    assert e2e.a.json("renew", A_SESSION)["results"][0]["result"] == "skipped"
    assert e2e.net.a.key_ids() == {old_id, new_id}
    with e2e.net.a.session() as s:
        for sa in e2e.net.a.list_sas():
            if sa.uniqueid <= old_sa.uniqueid:
                list(s.terminate({"ike-id": str(sa.uniqueid), "timeout": 3000}))
    # the next pass unloads it: charon's keys and the key file are in step again
    e2e.a.json("renew", A_SESSION)
    assert e2e.net.a.key_ids() == {new_id}
    assert e2e.net.serial_b_saw_for_a() == e2e.a.serial()


def _metric(path: Path, name: str, **labels: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_metrics_show_serial_drift_between_charon_and_disk(e2e: E2E) -> None:
    """A renewal that did not reach charon (files only) shows as drift until charon loads the
    files (here: `swanctl --load-creds`, as an operator would); drift is read from charon."""
    old = enroll_a(e2e, "--regenerate")
    prom = e2e.tmp / "textfile" / "swcmp.prom"
    (e2e.a.config_dir / "swcmp.toml").write_text(f'[metrics]\ntextfile = "{prom}"\n')
    e2e.a.json("renew", A_SESSION)  # not due: skipped, but the metrics are written
    assert _metric(prom, "swcmp_charon_up") == 1
    assert _metric(prom, "swcmp_charon_certificate_current", session=A_SESSION) == 1
    assert _metric(prom, "swcmp_charon_stale_certificates", session=A_SESSION) == 0

    e2e.a.json("renew", "--force", "--no-deploy", A_SESSION)  # files only: charon keeps old
    assert e2e.a.serial() != old.serial_number
    e2e.a.json("renew", A_SESSION)
    assert _metric(prom, "swcmp_charon_certificate_current", session=A_SESSION) == 0
    assert _metric(prom, "swcmp_charon_stale_certificates", session=A_SESSION) == 1
    assert _metric(prom, "swcmp_renewals_total", session=A_SESSION, result="success") == 1

    e2e.net.a.swanctl("--load-creds")  # the files are the truth: charon now holds the new pair
    e2e.a.json("renew", A_SESSION)
    assert _metric(prom, "swcmp_charon_certificate_current", session=A_SESSION) == 1
    assert _metric(prom, "swcmp_charon_stale_certificates", session=A_SESSION) == 0
    assert _metric(prom, "swcmp_certificate_not_after_timestamp_seconds", session=A_SESSION) \
        == int(e2e.a.cert().not_valid_after_utc.timestamp())

    e2e.net.a.stop()
    e2e.a.json("renew", A_SESSION)
    assert _metric(prom, "swcmp_charon_up") == 0
    assert _metric(prom, "swcmp_charon_certificate_current", session=A_SESSION) is None
