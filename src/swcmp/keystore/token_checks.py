"""``session check`` items for a session whose key is in a PKCS#11 token.

In this order, each stopping the ones after it when it fails:

* ``token-module``: the module and PIN file are set and the module loads;
* ``token-present``: exactly one token matches the URI;
* ``token-pin``: the PIN file is 0600 and the token takes the PIN;
* ``key-pair``: the token holds the session's key pair (or none yet before the
  first request, which makes it);
* ``token-key-cert``: the pair's public key is the one the certificate certifies;
* ``token-swanctl``: swanctl's ``conf.d`` holds the secrets entry for that pair
  and swanctl.conf includes it (a warning: only ``swanctl --load-creds`` needs it).
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from swcmp.checkresult import FAIL, OK, WARN, CheckResult
from swcmp.cmp import certs
from swcmp.errors import SwcmpError
from swcmp.keystore.pkcs11 import TokenKey, TokenStore, _library, read_pin
from swcmp.paths import Paths
from swcmp.session import Session


def _set(session: Session, option: str) -> str:
    return f"swcmp session set {session.name} {option}"


def secrets_file(paths: Paths, session: Session) -> Path:
    """``conf.d/swcmp-<session>.conf`` under the swanctl directory."""
    return paths.swanctl_dir / "conf.d" / f"swcmp-{session.name}.conf"


def swanctl_includes_conf_d(swanctl_conf: Path) -> bool:
    """True when swanctl.conf has an ``include conf.d/*.conf`` line (or an absolute one)."""
    try:
        text = swanctl_conf.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) == 2 and words[0] == "include" and words[1].endswith("conf.d/*.conf"):
            return True
    return False


def token_checks(session: Session, paths: Paths,
                 store: TokenStore | SwcmpError) -> list[CheckResult]:
    """The token items, in the order of the module docstring (``store`` is the error
    when the session's token settings are incomplete)."""
    out: list[CheckResult] = []
    try:
        if isinstance(store, SwcmpError):
            raise store
        config = store.config
        _library(str(config.module))
    except SwcmpError as e:
        return [CheckResult("token-module", FAIL, str(e), e.hint or
                            _set(session, "--pkcs11-module PATH"))]
    out.append(CheckResult("token-module", OK, f"PKCS#11 module {config.module} loads"))
    try:
        token = store.token()
    except SwcmpError as e:
        return [*out, CheckResult("token-present", FAIL, str(e), e.hint or "")]
    out.append(CheckResult("token-present", OK, f"token {str(token.label).strip()!r} is there"))
    try:
        read_pin(config.pin_file, session=session.name)
        pairs = store.pairs()
    except SwcmpError as e:
        return [*out, CheckResult("token-pin", FAIL, str(e),
                                  e.hint or _set(session, "--pin-file FILE"))]
    out.append(CheckResult("token-pin", OK, f"the token takes the PIN in {config.pin_file}"))
    cert_path = paths.cert_file(session.name)
    cert: x509.Certificate | None = None
    if cert_path.exists():
        try:
            cert = certs.load_certificate(cert_path.read_bytes())
        except (OSError, SwcmpError) as e:
            return [*out, CheckResult("token-key-cert", FAIL, f"{cert_path}: {e}",
                                      f"run `swcmp request initial {session.name}`")]
    if not pairs:
        level = FAIL if cert is not None else OK
        detail = (f"no key pair with {store.uri.describe()}"
                  + ("" if cert is not None else "; the first request makes one in the token"))
        return [*out, CheckResult("key-pair", level, detail,
                                  f"run `swcmp request initial {session.name}`"
                                  if level == FAIL else "")]
    out.append(CheckResult("key-pair", OK, f"{len(pairs)} key pair(s) with "
                           f"{store.uri.describe()}"))
    if cert is None:
        return out
    current: TokenKey | None = store.key_for(certs.spki_of(cert))
    if current is None:
        return [*out, CheckResult(
            "token-key-cert", FAIL,
            f"no key pair in the token matches the certificate {cert_path}",
            f"the token was reset or the URI changed: run `swcmp request initial "
            f"{session.name}` to enroll a key made in the token")]
    out.append(CheckResult("token-key-cert", OK,
                           f"the certificate certifies the pair with CKA_ID {current.handle}"))
    secrets = secrets_file(paths, session)
    conf = paths.swanctl_dir / "swanctl.conf"
    try:
        text = secrets.read_text(encoding="utf-8")
    except OSError:
        text = ""
    if f"handle = {current.handle}" not in text:
        out.append(CheckResult(
            "token-swanctl", WARN,
            f"{secrets} does not name the current key pair: `swanctl --load-creds` would "
            "unload charon's key", f"run `swcmp request keyupdate {session.name}` (it "
            "rewrites the entry), or add a secrets {{ token-... {{ handle = "
            f"{current.handle} }} }} entry with its pin to swanctl.conf"))
    elif not swanctl_includes_conf_d(conf):
        out.append(CheckResult(
            "token-swanctl", WARN,
            f"{conf} does not include conf.d/*.conf, so swanctl never reads {secrets}: "
            "`swanctl --load-creds` would unload charon's key",
            f"add the line `include conf.d/*.conf` to {conf}"))
    else:
        out.append(CheckResult("token-swanctl", OK,
                               f"{secrets} makes `swanctl --load-creds` load the token key"))
    return out
