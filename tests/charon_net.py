"""Two real charon daemons in two network namespaces, for integration tests.

Layout of one :class:`CharonNet` (``<base>`` is a per-test temporary directory)::

    host ns ─┐ (only files are shared)
             ├── netns swcmp-<pid>-<token>-a   10.251.0.1/24  dev swcmp0  (veth)
             └── netns swcmp-<pid>-<token>-b   10.251.0.2/24  dev swcmp0  (veth)

Each charon runs as ``ip netns exec NS unshare --mount --propagation private``
with a private tmpfs on ``/run``, because charon's pid file path is fixed
(``/var/run/charon.pid``). Its strongswan.conf (``STRONGSWAN_CONF``), log,
VICI socket and swanctl directory all live under ``<base>/<node>/``, so the
host reaches each VICI socket by path (``unix://<base>/<node>/charon.vici``).
The veth pair is created directly inside the two namespaces, so no interface
name ever exists in the host namespace and parallel runs cannot clash.

Connections are in identity mode: ``local.id`` is set, ``local.certs`` is not,
so charon picks the local certificate by identity from its credential sets.

Which certificate did B see for A? charon keeps the end-entity certificates it
received and verified in its certificate cache, which ``list-certs`` includes
(``has_privkey`` absent) and ``flush-certs`` empties. B never loads A's
certificate itself, so: flush B's cache, establish a new IKE SA from A, then
A's certificates in B's ``list-certs`` are exactly the one A presented
(:meth:`CharonNode.peer_cert_serials`, used by :meth:`CharonNet.serial_b_saw_for_a`).

Teardown (:meth:`CharonNet.close`) kills the charons it started, every process
still inside its namespaces (it created them) and deletes the namespaces; it
runs from ``with``/fixture finalizers and, as a last resort, ``atexit``.
Namespaces left by a killed run (their creator pid is dead) are removed by the
next run.
"""

from __future__ import annotations

import atexit
import datetime as dt
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import vici
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from debian_root import DebianRoot

CHARON = Path("/usr/lib/ipsec/charon")
SWANCTL = shutil.which("swanctl") or "/usr/sbin/swanctl"
PLUGINS = (
    "kdf random nonce openssl pem pkcs1 pkcs8 x509 revocation constraints pubkey "
    "kernel-netlink socket-default vici"
)
NS_PREFIX = "swcmp-"
SUBNET = ipaddress.ip_network("10.251.0.0/24")
IKE_PROPOSALS = "aes256-sha256-ecp256"
#: with ``userspace_esp``, each node's connection has a child ``net`` from its subnet to the
#: other's: not the IKE addresses, which kernel-libipsec refuses to route through its TUN
ESP_SUBNETS = {"a": "10.252.1.0/24", "b": "10.252.2.0/24"}


def available() -> str | None:
    """Return why the harness cannot run here (not root, no charon), or None when it can.

    Nothing else is a reason to skip: a missing swanctl or iproute2 makes the
    tests fail loudly, so that CI (root, charon installed) never skips them.
    """
    if os.geteuid() != 0:
        return "needs root (network namespaces, charon)"
    if not CHARON.exists():
        return f"charon not installed ({CHARON} missing; apt install strongswan-charon)"
    return None


def _run(*args: str, check: bool = True, env: Mapping[str, str] | None = None,
         timeout: float = 30) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        args, capture_output=True, text=True, env=dict(env) if env is not None else None,
        timeout=timeout, check=False,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}"
        )
    return proc


# --------------------------------------------------------------------------- PKI


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM of a private key."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def pem_cert(cert: x509.Certificate) -> bytes:
    """PEM of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM)


class TestPKI:
    """A throw-away CA that issues gateway certificates with SAN = identity."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str = "swcmp test CA") -> None:
        self.key: CertificateIssuerPrivateKeyTypes = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "swcmp tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ])
        now = _now()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name).issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return pem_cert(self.cert)

    def issue(
        self,
        identity: str,
        key: ec.EllipticCurvePrivateKey | None = None,
        *,
        days: int = 10,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """Issue a certificate for ``identity`` (CN and DNS SAN); a fresh key unless given."""
        if key is None:
            key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "swcmp tests"),
                x509.NameAttribute(NameOID.COMMON_NAME, identity),
            ]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(identity)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return key, cert


# --------------------------------------------------------------------------- SAs


@dataclass(frozen=True)
class IkeSa:
    """One IKE SA as ``list-sas`` shows it."""

    name: str
    uniqueid: int
    state: str
    initiator_spi: str
    responder_spi: str
    local_id: str
    remote_id: str
    children: int

    @property
    def spis(self) -> tuple[str, str]:
        return self.initiator_spi, self.responder_spi


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------- nodes


class CharonNode:
    """One charon in its own network and mount namespace."""

    def __init__(self, net: CharonNet, label: str, address: str, peer: str,
                 identity: str, peer_identity: str) -> None:
        self.net = net
        self.label = label
        self.netns = f"{net.prefix}-{label}"
        self.address = address
        self.peer_address = peer
        self.identity = identity
        self.peer_identity = peer_identity
        self.dir = net.base / label
        self.swanctl_dir = self.dir / "swanctl"
        self.conf = self.dir / "strongswan.conf"
        self.swanctl_conf = self.swanctl_dir / "swanctl.conf"
        self.vici_path = self.dir / "charon.vici"
        self.log = self.dir / "charon.log"
        self.stdout = self.dir / "charon.stdout"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # charon.start-scripts entries (name -> command), written by write_config()
        self.start_scripts: dict[str, str] = {}

    @property
    def uri(self) -> str:
        return f"unix://{self.vici_path}"

    # -- files

    def write_config(self, conn: str = "gw", *, pinned: bool = False, extra: str = "",
                     cert_file: str | None = None, pkcs11_module: str | None = None) -> None:
        """Write strongswan.conf and an identity-mode swanctl.conf for this node.

        Call again after changing :attr:`start_scripts`; charon reads it on start.

        Args:
            conn: the connection name.
            pinned: pinned mode: ``local.certs = <label>.pem`` names the certificate
                file (``local.id`` stays set).
            extra: swanctl.conf lines added inside the connection section (e.g. a
                ``children { ... }`` block; default with ``userspace_esp``: child ``net``).
            cert_file: with ``pinned``, the file (relative to ``x509/``) that
                ``local.certs`` names instead of ``<label>.pem`` (e.g. swcmp's
                ``<session>.crt``).
            pkcs11_module: load charon's pkcs11 plugin with this PKCS#11 module
                (keys in a token, loaded with VICI ``load-token``).
        """
        for sub in ("x509", "x509ca", "private", "pubkey", "conf.d"):
            (self.swanctl_dir / sub).mkdir(parents=True, exist_ok=True)
        scripts = "".join(f"    {name} = {cmd}\n" for name, cmd in self.start_scripts.items())
        self.conf.write_text(textwrap.dedent(f"""\
            # charon for swcmp tests, node {self.label} ({self.netns})
            charon {{
              load_modular = no
              load = {self.net.plugins}{" pkcs11" if pkcs11_module else ""}
              install_routes = no
              # every initiate makes a new IKE SA (tests count them)
              reuse_ikesa = no
              retransmit_tries = 2
              retransmit_timeout = 1
              start-scripts {{
            @SCRIPTS@
              }}
              plugins {{
                vici {{
                  socket = unix://{self.vici_path}
                }}
            @PKCS11@
              }}
              syslog {{
                daemon {{
                  default = -1
                }}
              }}
              filelog {{
                test {{
                  path = {self.log}
                  default = 1
                  ike = 2
                  cfg = 2
                  flush_line = yes
                  time_format = %H:%M:%S
                }}
              }}
            }}
            swanctl {{
              load = pem pkcs1 pkcs8 x509 openssl
            }}
            """).replace("@SCRIPTS@\n", scripts).replace("@PKCS11@\n", (
                f"    pkcs11 {{\n      modules {{\n        token {{\n"
                f"          path = {pkcs11_module}\n        }}\n      }}\n    }}\n"
                if pkcs11_module else "")))
        header = ("# pinned mode: local.certs names the certificate file" if pinned
                  else "# identity mode: the local certificate is chosen by local.id")
        certs = f"      certs = {cert_file or self.label + '.pem'}\n" if pinned else ""
        if not extra.strip() and self.net.userspace_esp:
            other = "b" if self.label == "a" else "a"
            extra = (f"children {{\n  net {{\n    local_ts = {ESP_SUBNETS[self.label]}\n"
                     f"    remote_ts = {ESP_SUBNETS[other]}\n"
                     "    esp_proposals = aes256-sha256\n  }\n}\n")
        extra_lines = textwrap.indent(textwrap.dedent(extra).strip() + "\n", " " * 4) if (
            extra.strip()) else ""
        self.swanctl_conf.write_text(textwrap.dedent(f"""\
            @HEADER@
            connections {{
              {conn} {{
                version = 2
                local_addrs = {self.address}
                remote_addrs = {self.peer_address}
                proposals = {IKE_PROPOSALS}
                unique = never
                # IKE SAs without CHILD_SAs (RFC 6023): no ESP needed in the kernel
                childless = {"force" if self.label == "a" else "allow"}
                local {{
                  auth = pubkey
                  id = {self.identity}
                  @CERTS@
                }}
                remote {{
                  auth = pubkey
                  id = {self.peer_identity}
                }}
            @EXTRA@
              }}
            }}
            include conf.d/*.conf
            """).replace("@HEADER@", header).replace("      @CERTS@\n", certs)
            .replace("@EXTRA@\n", extra_lines))

    def write_credentials(self, key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> None:
        """Write this node's key, certificate and CA certificate into its swanctl dir."""
        key_path = self.swanctl_dir / "private" / f"{self.label}.pem"
        key_path.write_bytes(key_pem)
        key_path.chmod(0o600)
        (self.swanctl_dir / "x509" / f"{self.label}.pem").write_bytes(cert_pem)
        (self.swanctl_dir / "x509ca" / "ca.pem").write_bytes(ca_pem)

    # -- process

    def start(self, timeout: float = 10.0) -> None:
        """Start charon in the node's namespaces and wait until VICI answers."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"charon {self.label} is already running")
        with suppress(FileNotFoundError):
            self.vici_path.unlink()
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "STRONGSWAN_CONF": str(self.conf)}
        # tokens of tests/softhsm.py and tests/tpm.py, for charon's pkcs11 plugin
        for name in ("SOFTHSM2_CONF", "TPM2_PKCS11_TCTI", "TPM2_PKCS11_STORE",
                     "DBUS_SESSION_BUS_ADDRESS"):
            if name in os.environ:
                env[name] = os.environ[name]
        out = self.stdout.open("ab")
        if self.net.root is not None:
            # another Debian release's charon, in the same namespaces, from its root file
            # system: the node's directory and the caller's binds seen at the same paths
            argv = self.net.root.argv([str(CHARON)], binds=[self.net.base, *self.net.binds],
                                      netns=self.netns, tmpfs=["/run"])
        else:
            argv = ["ip", "netns", "exec", self.netns,
                    "unshare", "--mount", "--propagation", "private",
                    "sh", "-c", 'mount -t tmpfs -o size=8m,mode=0755 swcmp-run /run && exec "$0"',
                    str(CHARON)]
        try:
            self.proc = subprocess.Popen(
                argv,
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"charon {self.label} exited with {self.proc.returncode}: "
                    f"{self.stdout.read_text(errors='replace')[-2000:]}"
                    f"{self.log.read_text(errors='replace')[-2000:] if self.log.exists() else ''}"
                )
            if self.vici_path.exists():
                try:
                    with self.session() as s:
                        s.request("version")
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"charon {self.label} did not open {self.vici_path} in {timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop charon (SIGTERM, then SIGKILL); safe to call when it is not running."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout)
        self.proc = None

    def kill(self) -> None:
        """Kill charon hard (SIGKILL), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self, *, load_conns: bool = True, load_creds: bool = False) -> None:
        """Stop and start charon; then load connections (and credentials) with swanctl."""
        self.stop()
        self.start()
        if load_conns:
            self.swanctl("--load-conns")
        if load_creds:
            self.swanctl("--load-creds", "--noprompt")

    # -- control

    @contextmanager
    def session(self, timeout: float = 15.0) -> Iterator[Any]:
        """A VICI session on this node's socket (closed afterwards)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(str(self.vici_path))
            yield vici.Session(sock)
        finally:
            sock.close()

    def swanctl(self, *args: str) -> str:
        """Run swanctl against this node (its URI, swanctl dir and swanctl.conf)."""
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin"),
               "STRONGSWAN_CONF": str(self.conf), "SWANCTL_DIR": str(self.swanctl_dir)}
        proc = _run(SWANCTL, *args, "--uri", self.uri, "--file", str(self.swanctl_conf),
                    env=env)
        return proc.stdout

    def load_all(self) -> None:
        """``swanctl --load-all``: credentials and connections from the swanctl dir."""
        self.swanctl("--load-all", "--noprompt")

    def initiate(self, conn: str = "gw", timeout_ms: int = 10000) -> IkeSa:
        """Initiate a new childless IKE SA and return it once established.

        Raises:
            RuntimeError: charon could not establish it; the message has charon's log.
        """
        before = {sa.uniqueid for sa in self.list_sas()}
        logs: list[str] = []
        try:
            with self.session(timeout=timeout_ms / 1000 + 5) as s:
                for event in s.initiate({"ike": conn, "timeout": timeout_ms,
                                         "init-limits": "no", "loglevel": 1}):
                    if "msg" in event:
                        logs.append(_s(event["msg"]))
        except Exception as e:  # vici raises CommandException on failure
            raise RuntimeError(
                f"initiate {conn} on {self.label} failed: {e}\n" + "\n".join(logs[-30:])
            ) from e
        new = [sa for sa in self.list_sas() if sa.uniqueid not in before and sa.name == conn
               and sa.state == "ESTABLISHED"]
        if len(new) != 1:
            raise RuntimeError(f"expected one new IKE SA on {self.label}, found {new}")
        return new[0]

    def initiate_child(self, child: str, timeout_ms: int = 10000) -> IkeSa:
        """Initiate CHILD_SA ``child`` in a new IKE SA (``reuse_ikesa = no``); that IKE SA.

        Needs a CharonNet with ``userspace_esp``: this kernel has no XFRM.
        """
        before = {sa.uniqueid for sa in self.list_sas()}
        try:
            with self.session(timeout=timeout_ms / 1000 + 5) as s:
                for _ in s.initiate({"child": child, "timeout": timeout_ms,
                                     "init-limits": "no", "loglevel": 1}):
                    pass
        except Exception as e:
            raise RuntimeError(f"initiate {child} on {self.label} failed: {e}\n"
                               + self.log_text()[-3000:]) from e
        new = [sa for sa in self.list_sas() if sa.uniqueid not in before
               and sa.state == "ESTABLISHED" and sa.children]
        if len(new) != 1:
            raise RuntimeError(f"expected one new IKE SA with a CHILD_SA on {self.label}, "
                               f"found {new}")
        return new[0]

    def list_sas(self) -> list[IkeSa]:
        """Every IKE SA with its SPIs, identities and state."""
        found: list[IkeSa] = []
        with self.session() as s:
            for event in s.list_sas():
                for name, sa in event.items():
                    found.append(IkeSa(
                        name=_s(name),
                        uniqueid=int(_s(sa["uniqueid"])),
                        state=_s(sa["state"]),
                        initiator_spi=_s(sa.get("initiator-spi", b"")),
                        responder_spi=_s(sa.get("responder-spi", b"")),
                        local_id=_s(sa.get("local-id", b"")),
                        remote_id=_s(sa.get("remote-id", b"")),
                        children=len(sa.get("child-sas", {})),
                    ))
        return found

    def flush_cert_cache(self) -> None:
        """Empty charon's cache of verified (peer) certificates."""
        with self.session() as s:
            s.request("flush-certs", {"type": "X509"})

    def key_ids(self) -> set[str]:
        """Ids of the private keys loaded over VICI (``get-keys``)."""
        with self.session() as s:
            return {_s(k) for k in s.request("get-keys").get("keys", [])}

    def cert_serials(self, subject_cn: str, *, with_privkey: bool | None = None) -> list[int]:
        """Serials of certificates in ``list-certs`` whose subject CN is ``subject_cn``."""
        serials: list[int] = []
        with self.session() as s:
            for item in s.list_certs({"type": "X509"}):
                cert = x509.load_der_x509_certificate(item["data"])
                cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
                if not cns or cns[0].value != subject_cn:
                    continue
                has_key = _s(item.get("has_privkey", b"no")) == "yes"
                if with_privkey is None or with_privkey == has_key:
                    serials.append(cert.serial_number)
        return serials

    def peer_cert_serials(self) -> list[int]:
        """Serials of the peer's certificates in this node's cache (see module doc)."""
        return self.cert_serials(self.peer_identity, with_privkey=False)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


# --------------------------------------------------------------------------- the pair


_LIVE: set[CharonNet] = set()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` every 50 ms until it is true; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale_namespaces() -> list[str]:
    """Delete ``swcmp-<pid>-...`` namespaces whose creating process is gone."""
    out = _run("ip", "netns", "list", check=False).stdout
    removed: list[str] = []
    for line in out.splitlines():
        name = line.split()[0] if line.strip() else ""
        parts = name.split("-")
        if not name.startswith(NS_PREFIX) or len(parts) != 4 or not parts[1].isdigit():
            continue
        if pid_alive(int(parts[1])):
            continue
        _kill_netns_pids(name)
        _run("ip", "netns", "del", name, check=False)
        removed.append(name)
    return removed


def _kill_netns_pids(netns: str) -> None:
    pids = _run("ip", "netns", "pids", netns, check=False).stdout.split()
    for pid in pids:
        with suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


class CharonNet:
    """Nodes A (10.251.0.1, initiator) and B (10.251.0.2) with one CA.

    Use as a context manager (or call :meth:`setup` and :meth:`close`).
    """

    def __init__(self, base: Path, *, pki: TestPKI | None = None,
                 credentials: bool = True, root: DebianRoot | None = None,
                 binds: tuple[Path, ...] = (), userspace_esp: bool = False) -> None:
        self.base = base
        #: charon's plugins; with ``userspace_esp`` kernel-libipsec (ESP in charon, over a
        #: TUN device) comes before kernel-netlink and so handles the SAs: CHILD_SAs can
        #: be set up although this kernel has no XFRM (their traffic selectors must not
        #: cover the IKE addresses); each connection then has the child ``net`` between
        #: :data:`ESP_SUBNETS` unless ``write_config(extra=...)`` says otherwise
        self.userspace_esp = userspace_esp
        self.plugins = PLUGINS.replace("kernel-netlink", "kernel-libipsec kernel-netlink") if (
            userspace_esp) else PLUGINS
        #: run the charons of this Debian root file system (e.g. Debian 13's strongSwan
        #: 6.0) instead of the machine's; ``binds`` are host directories they must see
        #: (the start scripts' swcmp directories and virtual environment)
        self.root = root
        self.binds = binds
        #: False: start both charons with connections only; credentials come
        #: from elsewhere (the demo enrolls both gateways with swcmp).
        self.credentials = credentials
        self.prefix = f"{NS_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.pki = pki or TestPKI()
        hosts = list(SUBNET.hosts())
        self.a = CharonNode(self, "a", str(hosts[0]), str(hosts[1]),
                            "a.swcmp.test", "b.swcmp.test")
        self.b = CharonNode(self, "b", str(hosts[1]), str(hosts[0]),
                            "b.swcmp.test", "a.swcmp.test")
        self._namespaces: list[str] = []
        self.a_key, self.a_cert = self.pki.issue(self.a.identity)
        self.b_key, self.b_cert = self.pki.issue(self.b.identity)

    def __enter__(self) -> CharonNet:
        try:
            self.setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def setup(self) -> None:
        """Create namespaces and the veth pair, write configs, start both charons, load all."""
        _LIVE.add(self)
        cleanup_stale_namespaces()
        for node in (self.a, self.b):
            _run("ip", "netns", "add", node.netns)
            self._namespaces.append(node.netns)
            _run("ip", "-n", node.netns, "link", "set", "lo", "up")
        _run("ip", "link", "add", "swcmp0", "netns", self.a.netns, "type", "veth",
             "peer", "name", "swcmp0", "netns", self.b.netns)
        for node in (self.a, self.b):
            _run("ip", "-n", node.netns, "addr", "add", f"{node.address}/{SUBNET.prefixlen}",
                 "dev", "swcmp0")
            _run("ip", "-n", node.netns, "link", "set", "swcmp0", "up")
        ca = self.pki.cert_pem
        for node, key, cert in ((self.a, self.a_key, self.a_cert),
                                (self.b, self.b_key, self.b_cert)):
            node.write_config()
            if self.credentials:
                node.write_credentials(pem_key(key), pem_cert(cert), ca)
            node.start()
            node.load_all()

    def close(self) -> None:
        """Stop both charons and delete the namespaces; never raises."""
        for node in (self.a, self.b):
            with suppress(Exception):
                node.stop()
        for netns in self._namespaces:
            with suppress(Exception):
                _kill_netns_pids(netns)
            with suppress(Exception):
                _run("ip", "netns", "del", netns, check=False)
        self._namespaces.clear()
        _LIVE.discard(self)

    def serial_b_saw_for_a(self, child: str | None = None) -> int:
        """Establish a new IKE SA from A and return the serial of the cert A presented to B.

        B's certificate cache is flushed first, so the only A certificate in B's
        ``list-certs`` afterwards is the one B verified for this IKE SA. With ``child``
        the IKE SA carries that CHILD_SA (needs ``userspace_esp``).
        """
        self.b.flush_cert_cache()
        stale = self.b.peer_cert_serials()
        if stale:
            raise AssertionError(f"flush-certs left A's certificates on B: {stale}")
        if child is None:
            self.a.initiate()
        else:
            self.a.initiate_child(child)
        serials = self.b.peer_cert_serials()
        if len(serials) != 1:
            raise AssertionError(f"B holds {len(serials)} certificates of A: {serials}")
        return serials[0]


@atexit.register
def _close_all() -> None:
    for net in list(_LIVE):
        net.close()
