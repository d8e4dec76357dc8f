"""The credential store: the typed journal, the commit order, the archive."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from swcmp.errors import StorageError
from swcmp.paths import Paths
from swcmp.store import Journal, JournalEntry, write_pair


def _paths(tmp_path: Path) -> Paths:
    return Paths(config_dir=tmp_path / "etc", state_dir=tmp_path / "state",
                 swanctl_dir=tmp_path / "swanctl")


def test_journal_entries_are_typed_and_round_trip(tmp_path: Path) -> None:
    j = Journal(_paths(tmp_path), "gw1")
    assert j.load() is None
    first = j.write(phase="key-ready", old_serial="1f", regenerate=True)
    assert first == JournalEntry("key-ready", old_serial="1f", regenerate=True)
    later = j.write(phase="waiting", kind="kur", transaction_id="ab" * 16, server_nonce="cd" * 16)
    assert j.load() == later and later.old_serial == "1f"  # earlier fields are kept
    assert later.transaction() == (bytes.fromhex("ab" * 16), bytes.fromhex("cd" * 16))
    assert os.stat(j.path).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("data, problem", [
    ({"phase": "polling"}, "phase 'polling' is not one of"),
    ({"phase": "waiting", "transaction_id": "zz"}, "transaction_id is not a hex string"),
    ({"phase": "waiting", "cert_req_id": 2**64}, "cert_req_id is not a 64-bit integer"),
    ({"phase": "received", "regenerate": "yes"}, "regenerate is not true or false"),
    ({"phase": "waiting", "url": "ftp://ca/"}, "url: invalid server URL"),
    ({"phase": "waiting", "url": 7}, "url is not text"),
    ({"phase": "waiting", "url_per_body": "no"}, "url_per_body is not true or false"),
])
def test_a_damaged_journal_is_refused_with_what_is_wrong(tmp_path: Path, data: dict,
                                                          problem: str) -> None:
    j = Journal(_paths(tmp_path), "gw1")
    j.dir.mkdir(parents=True)
    j.path.write_text(json.dumps(data))
    with pytest.raises(StorageError, match=problem) as info:
        j.load()
    assert "removing it abandons the interrupted renewal" in info.value.hint


def test_fields_of_a_newer_version_are_ignored(tmp_path: Path) -> None:
    j = Journal(_paths(tmp_path), "gw1")
    j.dir.mkdir(parents=True)
    j.path.write_text(json.dumps({"phase": "confirmed", "token_object": "x"}))
    assert j.load() == JournalEntry("confirmed")


def test_write_pair_never_leaves_a_certificate_without_its_key(tmp_path: Path) -> None:
    key, cert = tmp_path / "gw.key", tmp_path / "gw.crt"
    key.write_bytes(b"old key")
    cert.write_bytes(b"old cert")
    seen: dict[str, tuple[bytes, bytes, bool]] = {}

    def checkpoint(step: str) -> None:
        seen[step] = (key.read_bytes(), cert.read_bytes(), key.with_name("gw.key.next").exists())

    write_pair(key, b"new key", cert, b"new cert", previous_key=b"old key", checkpoint=checkpoint)
    # the new key is beside the old one before the certificate changes
    assert seen["key-written"] == (b"old key", b"old cert", True)
    assert seen["cert-written"] == (b"old key", b"new cert", True)
    assert (key.read_bytes(), cert.read_bytes()) == (b"new key", b"new cert")
    assert not key.with_name("gw.key.next").exists()
    assert os.stat(key).st_mode & 0o777 == 0o600
