"""The README's CMP library example, run as written against the embedded test CA.

Only the CA's address, MAC reference and secret and the CA certificate's file are
substituted; the example must enroll a key (IR) and renew it with a new one (KUR).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from swcmp.cmp import certs, keys
from swcmp.testca import TestCA
from swcmp.testca.config import CAConfig
from testpaths import REPO

pytestmark = pytest.mark.integration


def _example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## The CMP library"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README has no python example in 'The CMP library'"
    return match.group(1)


def test_the_readme_library_example_enrolls_and_renews(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca", config=CAConfig(mac_ref=b"ref-7", mac_secret=b"s3cret")).start()
    ca_cert = ca.ca_cert
    try:
        (tmp_path / "ca.crt").write_bytes(certs.pem_of(ca_cert))
        code = _example()
        for old, new in [("http://ca.example.net/pkix/", ca.url), ('b"1234"', 'b"ref-7"'),
                         ('secret=b"..."', 'secret=b"s3cret"')]:
            assert old in code, f"the README example no longer has {old}"
            code = code.replace(old, new)
        scope: dict[str, object] = {}
        cwd = os.getcwd()
        os.chdir(tmp_path)
        try:
            exec(compile(code, "README.md", "exec"), scope)
        finally:
            os.chdir(cwd)
    finally:
        ca.stop()
    enrolled, renewed = scope["enrolled"], scope["renewed"]
    assert certs.spki_of(enrolled.certificate) == keys.spki_der(scope["key"])  # type: ignore[attr-defined,arg-type]
    assert certs.spki_of(renewed.certificate) == keys.spki_der(scope["new_key"])  # type: ignore[attr-defined,arg-type]
    assert renewed.certificate.issuer == ca_cert.subject  # type: ignore[attr-defined]
