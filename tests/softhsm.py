"""SoftHSM2 tokens for tests: a real PKCS#11 module (Debian ``softhsm2``).

SoftHSM reads ``SOFTHSM2_CONF`` once, when a process loads the module, so every
test of a pytest run shares one token directory (made on first use, in a
temporary directory) and gets tokens of its own by label. The variable is set in
``os.environ``: swcmp run in this process or as a child, and charon started by
tests/charon_net.py, all see the same tokens.

Objects are counted here with python-pkcs11 directly, not through swcmp.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
SO_PIN = "so-pin-1234"

_dir: Path | None = None


def unavailable() -> str | None:
    """Why SoftHSM cannot be used here, or None."""
    if not MODULE.exists():
        return f"SoftHSM2 is not installed ({MODULE} missing; apt install softhsm2)"
    if shutil.which("softhsm2-util") is None:
        return "softhsm2-util missing (apt install softhsm2)"
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 is not installed (pip install -e '.[test]')"
    return None


def _setup() -> Path:
    global _dir
    if _dir is None:
        _dir = Path(tempfile.mkdtemp(prefix="swcmp-softhsm-"))
        atexit.register(shutil.rmtree, _dir, True)
        (_dir / "tokens").mkdir(mode=0o700)
        conf = _dir / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {_dir / 'tokens'}\n"
                        "objectstore.backend = file\nlog.level = ERROR\n")
        os.environ["SOFTHSM2_CONF"] = str(conf)
    return _dir


@dataclass(frozen=True)
class Token:
    """One initialised SoftHSM token with a user PIN in a 0600 file."""

    label: str
    pin: str
    pin_file: Path
    module: Path = MODULE

    def uri(self, obj: str = "gw") -> str:
        return f"pkcs11:token={self.label};object={obj}"

    def objects(self, obj: str = "gw") -> list[tuple[str, bytes]]:
        """(class, CKA_ID) of every object with label ``obj``, sorted."""
        import pkcs11

        lib = pkcs11.lib(str(self.module))
        lib.reinitialize()
        token = lib.get_token(token_label=self.label)
        with token.open(user_pin=self.pin) as s:
            return sorted((o.object_class.name, bytes(o[pkcs11.Attribute.ID]))
                          for o in s.get_objects({pkcs11.Attribute.LABEL: obj}))

    def key_ids(self, obj: str = "gw") -> set[bytes]:
        """CKA_IDs that have a private key object."""
        return {i for c, i in self.objects(obj) if c == "PRIVATE_KEY"}


def new_token(where: Path, label: str | None = None) -> Token:
    """Initialise a fresh token; its PIN file goes to ``where`` (mode 0600)."""
    _setup()
    label = label or f"t{secrets.token_hex(4)}"
    pin = secrets.token_hex(6)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label,
                    "--so-pin", SO_PIN, "--pin", pin], check=True, capture_output=True)
    pin_file = where / f"{label}.pin"
    fd = os.open(pin_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pin + "\n")
    return Token(label, pin, pin_file)
