"""swcmp's Debian package, built for Debian 12 and 13 and installed into a clean root file system
of each release (`apt-get install ./swcmp_*.deb`, as the README's quick start does), then run
from the installed package: --version, man, the systemd units, and an enrolment (IR) and a
renewal (KUR) against `swcmp testca serve`, all inside that root.

scripts/build-deb builds the package inside a build root of the release and fails when
lintian reports an error. The clean root (scripts/rootfs RELEASE clean, no package beyond
Debian's required and apt) is cached and never changed: each run installs into an overlay
of it, with apt's package lists and downloaded .debs kept in the machine's test cache
(debian_root.TEST_CACHE).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from debian_root import TEST_CACHE, DebianRoot
from swcmp import __version__
from testpaths import REPO

pytestmark = [pytest.mark.integration, pytest.mark.root]

#: Debian release, its version tag in the package version, its Python.
RELEASES = {"bookworm": ("deb12", "3.11"), "trixie": ("deb13", "3.13")}
#: A clean environment for commands inside the root (the host's PATH names its venv).
ENV = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8", "HOME=/root",
       "DEBIAN_FRONTEND=noninteractive", "MANWIDTH=100"]


@dataclass
class Installed:
    release: str
    root: DebianRoot
    deb: Path
    binds: list[Path]
    seconds: dict[str, float]

    def sh(self, script: str, *, check: bool = True,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
        res = self.root.run([*ENV, "sh", "-ec", script], binds=self.binds, check=False,
                            timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"[{self.release}] {script}\n{res.stdout}\n{res.stderr}")
        return res


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "building and entering Debian root file systems needs root"
    for tool in ("mmdebstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/test installs mmdebstrap)"
    return None


def apt_options(release: str) -> str:
    """apt's package lists and downloaded packages kept for the next run; no fsync."""
    cache = TEST_CACHE / "apt" / release
    return (f"-o Dir::Cache::Archives={cache}/archives/ -o Dir::State::Lists={cache}/lists/ "
            "-o APT::Keep-Downloaded-Packages=true -o Dpkg::Options::=--force-unsafe-io")


def apt_get(release: str) -> str:
    """apt-get with :func:`apt_options`, waiting its turn for the shared cache (apt itself
    gives up at once when another checkout's test holds the cache's lock)."""
    return f"flock {TEST_CACHE / 'apt' / release}/turn apt-get {apt_options(release)}"


@pytest.fixture(scope="module", params=sorted(RELEASES))
def installed(request: pytest.FixtureRequest) -> Iterator[Installed]:
    why = _skip_reason()
    if why:
        pytest.skip(why)
    release: str = request.param
    seconds: dict[str, float] = {}
    t = time.monotonic()
    out = subprocess.run([str(REPO / "scripts" / "build-deb"), release], check=False,
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout + out.stderr[-5000:]
    deb = Path(out.stdout.strip().splitlines()[-1])
    seconds["build"] = time.monotonic() - t
    tag, _ = RELEASES[release]
    assert deb.name == f"swcmp_{__version__}+{tag}_{deb.name.rsplit('_', 1)[1]}"

    t = time.monotonic()
    clean = DebianRoot.build(release, "clean")
    cache = TEST_CACHE / "apt" / release
    for d in (cache / "archives" / "partial", cache / "lists" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"swcmp-deb-{release}-"))
    merged = work / "root"
    for d in ("upper", "work", "root"):
        (work / d).mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={clean.path},upperdir={work / 'upper'},workdir={work / 'work'}",
                    str(merged)], check=True)
    inst = Installed(release, DebianRoot(merged), deb, [deb.parent, cache], seconds)
    try:
        # the README's command; Recommends (man-db) come with it. Quicker in a throwaway
        # root: dpkg skips fsync, and man-db does not index every page at install (man
        # finds swcmp's pages by their path without the index)
        inst.sh("echo 'man-db man-db/auto-update boolean false' | debconf-set-selections")
        inst.sh(f"{apt_get(release)} -qq update && {apt_get(release)} "
                f"-qq -y install {deb} >/dev/null", timeout=600)
        seconds["install"] = time.monotonic() - t
        yield inst
    finally:
        print(f"DEB-MEASURE {release}: " + ", ".join(f"{k} {v:.1f} s"
                                                     for k, v in seconds.items()))
        subprocess.run(["umount", "--lazy", str(merged)], check=False)
        shutil.rmtree(work, ignore_errors=True)


def test_the_installed_swcmp_runs_from_its_virtual_environment(installed: Installed) -> None:
    tag, python = RELEASES[installed.release]
    out = installed.sh("swcmp --version; dpkg-query -W -f '${Version}\\n' swcmp; "
                       "readlink -f /usr/bin/swcmp; readlink -f /opt/swcmp/bin/python3; "
                       "head -n 1 /opt/swcmp/bin/swcmp").stdout.splitlines()
    assert out == [f"swcmp {__version__}", f"{__version__}+{tag}", "/opt/swcmp/bin/swcmp",
                   f"/usr/bin/python{python}", f"#!/opt/swcmp/bin/python{python}"]
    # the token extra is in the package: python-pkcs11 imports
    installed.sh("/opt/swcmp/bin/python3 -c 'import pkcs11, cryptography, vici'")
    # postinst byte-compiled the environment
    installed.sh("test -n \"$(find /opt/swcmp/lib -name '*.pyc' | head -n 1)\"")


def test_man_shows_both_pages(installed: Installed) -> None:
    page = installed.sh("man -P cat swcmp").stdout
    assert page.startswith("SWCMP(8)")
    assert "EXAMPLES" in page and "swcmp request keyupdate gw1" in page
    toml = installed.sh("man -P cat 5 swcmp.toml").stdout
    assert toml.startswith("SWCMP.TOML(5)") and "role_file = PATH" in toml


def test_the_package_puts_every_file_in_place(installed: Installed) -> None:
    conffiles = installed.sh("cat /var/lib/dpkg/info/swcmp.conffiles").stdout.split()
    assert {"/etc/swcmp/swcmp.toml", "/etc/strongswan.d/swcmp.conf",
            "/etc/cron.d/swcmp"} <= set(conffiles)
    assert installed.sh("stat -c %a /etc/swcmp").stdout.strip() == "700"
    for path in ("/lib/systemd/system/swcmp.service", "/lib/systemd/system/swcmp-renew.timer",
                 "/lib/systemd/system/swcmp-renew.service",
                 "/usr/share/swcmp/prometheus/swcmp-rules.yml",
                 "/usr/share/swcmp/keepalived-notify.sh"):
        installed.sh(f"test -s {path}")
    # the start script names the installed program, which runs
    snippet = installed.sh("cat /etc/strongswan.d/swcmp.conf").stdout
    assert re.search(r"^\s*swcmp = /usr/bin/swcmp hook charon-start$", snippet, re.M)
    # the service is enabled, the timer (its alternative) is not
    installed.sh("test -L /etc/systemd/system/multi-user.target.wants/swcmp.service")
    installed.sh("test ! -e /etc/systemd/system/timers.target.wants/swcmp-renew.timer")


def test_systemd_analyze_verify_accepts_the_units(installed: Installed) -> None:
    installed.sh("command -v systemd-analyze >/dev/null || "
                 f"{apt_get(installed.release)} -qq -y install --no-install-recommends "
                 "systemd >/dev/null", timeout=600)
    res = installed.sh("systemd-analyze verify /lib/systemd/system/swcmp.service "
                       "/lib/systemd/system/swcmp-renew.service "
                       "/lib/systemd/system/swcmp-renew.timer 2>&1", check=False)
    # verify reports missing programs, bad settings and unknown units on its output
    lines = [x for x in res.stdout.splitlines() if "swcmp" in x]
    assert res.returncode == 0 and not lines, res.stdout


def test_enrol_and_renew_from_the_installed_package(installed: Installed) -> None:
    """IR then KUR against `swcmp testca serve`, every command the installed one."""
    installed.sh("install -d -m 700 /etc/swcmp && printf 'pkg-test-secret' > /etc/swcmp/gw1.secret"
                 " && chmod 600 /etc/swcmp/gw1.secret && swcmp testca init --dir /root/ca "
                 ">/dev/null")
    ca = installed.root.popen([*ENV, "swcmp", "testca", "serve", "--dir", "/root/ca",
                               "--port", "0", "--mac-ref", "4711", "--mac-secret-file",
                               "/etc/swcmp/gw1.secret", "--validity", "1h"],
                              binds=installed.binds, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert ca.stdout is not None
        url = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not url:
            line = ca.stdout.readline()
            if not line:
                break
            if "listening on" in line:
                url = line.split("listening on", 1)[1].strip()
        assert url, "swcmp testca serve did not start"
        ca_name = installed.sh(
            "/opt/swcmp/bin/python3 -c 'import sys; from cryptography import x509; "
            "from swcmp.names import format_dn; print(format_dn(x509.load_pem_x509_certificate"
            "(open(\"/root/ca/ca.crt\", \"rb\").read()).subject))'").stdout.strip()
        installed.sh(
            "swcmp --vici none session create gw1 --entity /O=Example/CN=gw1.example.net "
            f"--san DNS:gw1.example.net --ca-name '{ca_name}' --server-url {url} "
            "--mac-ref 4711 --mac-secret-file /etc/swcmp/gw1.secret --trust /root/ca/ca.crt "
            "--key-type ecdsa:p256 >/dev/null")
        first = json.loads(installed.sh("swcmp --vici none --json request initial gw1").stdout)
        installed.sh("test -s /etc/swanctl/x509/gw1.crt && "
                     "test \"$(stat -c %a /etc/swanctl/private/gw1.key)\" = 600")
        key1 = installed.sh("sha256sum /etc/swanctl/private/gw1.key").stdout
        second = json.loads(installed.sh(
            "swcmp --vici none --json request keyupdate gw1 --regenerate").stdout)
        key2 = installed.sh("sha256sum /etc/swanctl/private/gw1.key").stdout
        on_disk = installed.sh("/opt/swcmp/bin/python3 -c 'from cryptography import x509; "
                               "print(format(x509.load_pem_x509_certificate(open("
                               "\"/etc/swanctl/x509/gw1.crt\", \"rb\").read()).serial_number,"
                               " \"x\"))'").stdout.strip()
    finally:
        ca.kill()
        ca.wait(timeout=10)
    assert first["ok"] is True and first["action"] == "ir", first
    assert second["ok"] is True and second["action"] == "kur", second
    assert first["serial"] != second["serial"]
    assert key1 != key2  # --regenerate: the renewal brought a new key
    assert on_disk == second["serial"].replace(":", "").lower().lstrip("0")


def test_purge_leaves_nothing_under_opt(installed: Installed) -> None:
    """Last (it removes the package): the byte code postinst made goes with the package."""
    key = "/etc/swanctl/private/gw1.key"  # made by the enrolment test, if it ran
    had_key = installed.sh(f"test -e {key}", check=False).returncode == 0
    installed.sh(f"{apt_get(installed.release)} -qq -y purge swcmp >/dev/null",
                 timeout=300)
    installed.sh("test ! -e /opt/swcmp && test ! -e /usr/bin/swcmp && "
                 "test ! -e /etc/swcmp/swcmp.toml")
    if had_key:  # what swcmp made is the operator's: keys and certificates stay
        installed.sh(f"test -s {key}")
