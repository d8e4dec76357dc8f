"""Tests for swcmp.config: sessions, validation, TOML files, the store, paths."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import tomllib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from swcmp.errors import ConfigError, SessionFileError
from swcmp.names import SessionName, parse_dn
from swcmp.paths import Paths
from swcmp.session import (
    FIELDS,
    Session,
    auth_credentials,
    field_name,
    read_mac_secret,
    session_key_file,
    set_fields,
    unset_fields,
    validate_server_url,
)
from swcmp.sessionfile import (
    SessionStore,
    dumps_toml,
    session_from_toml,
    session_to_toml,
)
from swcmp.values import ExpireTime

GW1 = SessionName("gw1")


def _full_session(tmp_path: Path) -> Session:
    return set_fields(
        Session(name=GW1),
        {
            "entity": "CN=gw1.example.net,O=Example,C=DE",
            "san": ["DNS:gw1.example.net", "ip:2001:db8::1", "EMAIL:ops@example.net"],
            "ca_name": "/C=DE/O=Example/CN=Example CA",
            "server_url": "http://ca.example.net:8080/pkix/",
            "ir_auth": "signature",
            "mac_ref": "ref 1",
            "mac_secret_file": str(tmp_path / "secret"),
            "mac_alg": "hmac-sha1",
            "auth_cert": tmp_path / "ext.crt",
            "auth_key": str(tmp_path / "ext.key"),
            "trust": [str(tmp_path / "ca1.pem"), str(tmp_path / "ca2.pem")],
            "key": "gw1-key",
            "regenerate": "yes",
            "key_type": "ecdsa:p384",
            "expire_time": "30d",
            "connection": ["site-a", "site_b"],
            "auto_update": True,
            "tls_ca_bundle": "/etc/ssl/certs/ca-certificates.crt",
        },
    )


class TestPaths:
    def test_defaults(self) -> None:
        p = Paths.from_env({})
        assert p == Paths(Path("/etc/swcmp"), Path("/var/lib/swcmp"), Path("/etc/swanctl"))

    def test_env_then_explicit(self) -> None:
        env = {
            "SWCMP_CONFIG_DIR": "/c",
            "SWCMP_STATE_DIR": "/s",
            "SWCMP_SWANCTL_DIR": "/w",
        }
        assert Paths.from_env(env) == Paths(Path("/c"), Path("/s"), Path("/w"))
        p = Paths.from_env(env, config_dir=Path("/x"))
        assert p.config_dir == Path("/x")
        assert p.state_dir == Path("/s")

    def test_empty_env_means_default(self) -> None:
        assert Paths.from_env({"SWCMP_CONFIG_DIR": ""}).config_dir == Path("/etc/swcmp")

    def test_layout(self) -> None:
        p = Paths(Path("/c"), Path("/s"), Path("/w"))
        assert p.sessions_dir == Path("/c/sessions")
        assert p.lock_dir == Path("/s/locks")
        assert p.session_state_dir("gw1") == Path("/s/sessions/gw1")
        assert p.key_file("k1") == Path("/w/private/k1.key")
        assert p.cert_file("gw1") == Path("/w/x509/gw1.crt")
        assert p.ca_cert_file("gw1", 2) == Path("/w/x509ca/gw1-ca2.crt")
        with pytest.raises(ValueError):
            p.ca_cert_file("gw1", 0)

    @pytest.mark.parametrize("bad", ["../x", "a/b", ".k"])
    def test_layout_refuses_path_tricks(self, bad: str) -> None:
        p = Paths()
        with pytest.raises(ConfigError):
            p.key_file(bad)
        with pytest.raises(ConfigError):
            p.cert_file(bad)

    def test_ca_cert_files_numeric_order(self, tmp_path: Path) -> None:
        p = Paths(tmp_path, tmp_path, tmp_path)
        assert p.ca_cert_files("gw1") == ()
        p.x509ca_dir.mkdir()
        for name in ("gw1-ca10.crt", "gw1-ca2.crt", "gw1-ca1.crt", "gw10-ca1.crt", "gw1-ca0.crt"):
            (p.x509ca_dir / name).write_bytes(b"")
        assert [f.name for f in p.ca_cert_files("gw1")] == [
            "gw1-ca1.crt",
            "gw1-ca2.crt",
            "gw1-ca10.crt",
        ]


class TestExpireTime:
    @pytest.mark.parametrize(
        ("value", "percent", "duration"),
        [
            (50, 50, None),
            ("50", 50, None),
            (" 75% ", 75, None),
            ("10", 10, None),
            (100, 100, None),
            ("30d", None, timedelta(days=30)),
            ("12h", None, timedelta(hours=12)),
            ("90m", None, timedelta(minutes=90)),
            ("1d12h", None, timedelta(days=1, hours=12)),
            ("2w", None, timedelta(weeks=2)),
            ("45s", None, timedelta(seconds=45)),
        ],
    )
    def test_parse(self, value: object, percent: int | None, duration: timedelta | None) -> None:
        et = ExpireTime.parse(value)
        assert (et.percent, et.duration) == (percent, duration)
        # The stored form reads back to the same value.
        assert ExpireTime.parse(et.to_toml()) == et

    @pytest.mark.parametrize(
        "value", [9, "101", 0, "0d", "", "abc", "30x", "d", "-5", True, 1.5, None, "99999999999w"]
    )
    def test_bad(self, value: object) -> None:
        with pytest.raises(ConfigError) as info:
            ExpireTime.parse(value)
        assert "expire_time" in str(info.value)

    def test_help_says_remaining(self) -> None:
        with pytest.raises(ConfigError) as info:
            ExpireTime.parse("5")
        assert "REMAIN" in str(info.value)

    def test_str(self) -> None:
        assert str(ExpireTime.parse("50")) == "50%"
        assert str(ExpireTime.parse("90m")) == "1h30m"
        assert str(ExpireTime.parse("1d")) == "1d"

    def test_renew_at_percent_is_remaining_share(self) -> None:
        start = datetime(2025, 1, 1, tzinfo=UTC)
        end = start + timedelta(days=100)
        assert ExpireTime(percent=50).renew_at(start, end) == start + timedelta(days=50)
        # 20% remaining: renew after 80 of 100 days, not after 20.
        assert ExpireTime(percent=20).renew_at(start, end) == start + timedelta(days=80)
        assert ExpireTime(percent=100).renew_at(start, end) == start

    def test_renew_at_duration(self) -> None:
        start = datetime(2025, 1, 1, tzinfo=UTC)
        end = start + timedelta(days=100)
        et = ExpireTime(percent=None, duration=timedelta(days=30))
        assert et.renew_at(start, end) == end - timedelta(days=30)
        short = ExpireTime(percent=None, duration=timedelta(days=300))
        assert short.renew_at(start, end) == start

    def test_constructors(self) -> None:
        assert ExpireTime.remaining_percent(30) == ExpireTime.parse("30%")
        assert ExpireTime.before_expiry(timedelta(days=3)) == ExpireTime.parse("3d")

    def test_needs_exactly_one(self) -> None:
        with pytest.raises(ConfigError):
            ExpireTime(percent=None, duration=None)
        with pytest.raises(ConfigError):
            ExpireTime(percent=50, duration=timedelta(days=1))


class TestServerUrl:
    @pytest.mark.parametrize(
        "url",
        [
            "http://ca.example.net/pkix/",
            "https://ca.example.net:8443/.well-known/cmp",
            "http://192.0.2.1:8080/",
            "http://[2001:db8::1]:8080/pkix/",
        ],
    )
    def test_good(self, url: str) -> None:
        assert validate_server_url(f" {url} ") == url

    @pytest.mark.parametrize(
        "url",
        [
            "ftp://ca.example.net/",
            "ca.example.net/pkix",
            "http://",
            "http://ca.example.net:99999/",
            "http://ca.example.net:0/",
            "http://ca.example.net/#frag",
            "http://ca example.net/",
            "http://[zz::1]/",
        ],
    )
    def test_bad(self, url: str) -> None:
        with pytest.raises(ConfigError, match="invalid server URL"):
            validate_server_url(url)


class TestSession:
    def test_defaults(self) -> None:
        s = Session(name=GW1)
        assert s.ir_auth == "mac"
        assert s.mac_alg == "hmac-sha256"
        assert s.key_type == "rsa:3072"
        assert s.expire_time == ExpireTime(percent=50)
        assert s.auto_update is False
        assert s.regenerate is False
        assert s.entity_dn is None

    def test_set_normalizes(self, tmp_path: Path) -> None:
        s = _full_session(tmp_path)
        assert s.sans == ("DNS:gw1.example.net", "IP:2001:db8::1", "EMAIL:ops@example.net")
        assert s.entity == "CN=gw1.example.net,O=Example,C=DE"  # as given
        assert s.entity_dn == parse_dn("/C=DE/O=Example/CN=gw1.example.net")
        assert s.ca_dn == parse_dn("CN=Example CA,O=Example,C=DE")
        assert isinstance(s.san_names[0], x509.DNSName)
        assert s.auth_key == tmp_path / "ext.key"
        assert s.trust == (tmp_path / "ca1.pem", tmp_path / "ca2.pem")
        assert s.regenerate is True
        assert s.connections == ("site-a", "site_b")
        assert s.expire_time.duration == timedelta(days=30)

    @pytest.mark.parametrize(
        ("field", "value", "words"),
        [
            ("entity", "CN", "TYPE=VALUE"),
            ("ca_name", "XX=1", "unknown attribute"),
            ("san", ["IP:gw1"], "subjectAltName"),
            ("server_url", "ftp://x", "http or https"),
            ("ir_auth", "password", "ir_auth"),
            ("mac_alg", "hmac-md5", "mac_alg"),
            ("mac_ref", "a\nb", "mac_ref"),
            ("mac_secret_file", "relative/secret", "not absolute"),
            ("trust", ["/a.pem", "/a.pem"], "twice"),
            ("key", "../etc/shadow", "key name"),
            ("key", "k.key/..", "key name"),
            ("regenerate", "maybe", "yes/no"),
            ("key_type", "rsa:1024", "key_type"),
            ("expire_time", "5", "expire_time"),
            ("connection", ["a.b"], "connection name"),
            ("connection", ["a", "a"], "twice"),
            ("auto_update", 1, "yes/no"),
            ("renew_with", "ir", "renew_with"),
            ("poll_limit", "0", "poll_limit"),
            ("poll_limit", "31d", "poll_limit"),
            ("poll_limit", "soon", "poll_limit"),
            ("poll_limit", True, "poll_limit"),
        ],
    )
    def test_bad_values(self, field: str, value: object, words: str) -> None:
        with pytest.raises(ConfigError) as info:
            set_fields(Session(name=GW1), {field: value})
        assert words in str(info.value)

    def test_renew_with_and_poll_limit(self) -> None:
        s = Session(name=GW1)
        assert (s.renew_with, s.poll_limit) == ("kur", 86400)
        s = set_fields(s, {"renew-with": "P10CR", "poll-limit": "1d12h"})
        assert (s.renew_with, s.poll_limit) == ("p10cr", 129600)
        assert set_fields(s, {"poll_limit": "90"}).poll_limit == 90
        assert set_fields(s, {"poll_limit": 3600}).poll_limit == 3600

    def test_p10cr_renewal_with_a_token_key_is_refused(self) -> None:
        token = "pkcs11:token=gw;object=gw1"
        with pytest.raises(ConfigError, match="p10cr") as info:
            set_fields(Session(name=GW1), {"key": token, "renew_with": "p10cr"})
        assert "--renew-with cr" in info.value.hint
        assert set_fields(Session(name=GW1), {"key": token, "renew_with": "cr"}).key == token

    def test_bad_name(self) -> None:
        with pytest.raises(ConfigError, match="invalid session name"):
            Session(name=SessionName("../x"))

    def test_unknown_field(self) -> None:
        with pytest.raises(ConfigError, match="unknown setting"):
            set_fields(Session(name=GW1), {"colour": "red"})

    def test_field_name_spellings(self) -> None:
        assert field_name("--mac-ref") == "mac_ref"
        assert field_name("MAC-REF") == "mac_ref"
        assert field_name("san") == "sans"
        assert field_name("connection") == "connections"
        assert set(FIELDS) >= {"entity", "trust", "expire_time", "tls_ca_bundle"}

    def test_relative_paths_resolved_against_base_dir(self, tmp_path: Path) -> None:
        s = set_fields(
            Session(name=GW1), {"trust": ["ca.pem"], "auth-cert": "c.crt"}, base_dir=tmp_path
        )
        assert s.trust == (tmp_path / "ca.pem",)
        assert s.auth_cert == tmp_path / "c.crt"

    def test_unset_resets_to_default(self, tmp_path: Path) -> None:
        s = unset_fields(
            _full_session(tmp_path), ["san", "expire-time", "ir_auth", "entity", "regenerate"]
        )
        assert s.sans == ()
        assert s.expire_time == ExpireTime(percent=50)
        assert s.ir_auth == "mac"
        assert s.entity is None and s.entity_dn is None
        assert s.regenerate is False
        assert s.server_url == "http://ca.example.net:8080/pkix/"  # untouched

    def test_describe_is_json_ready_and_secret_free(self, tmp_path: Path) -> None:
        secret = tmp_path / "secret"
        secret.write_bytes(b"TOPSECRET")
        s = _full_session(tmp_path)
        s = set_fields(s, {"mac_secret_file": str(secret)})
        shown = s.describe()
        text = json.dumps(shown)
        assert "TOPSECRET" not in text
        assert shown["name"] == "gw1"
        assert shown["entity"] == "CN=gw1.example.net,O=Example,C=DE"
        assert shown["entity_wire"] == "/C=DE/O=Example/CN=gw1.example.net"
        assert shown["ca_name_wire"] == "/C=DE/O=Example/CN=Example CA"
        assert shown["mac_secret_file"] == str(secret)
        assert shown["expire_time"] == "30d"
        assert shown["trust"] == [str(tmp_path / "ca1.pem"), str(tmp_path / "ca2.pem")]
        assert set(shown) == {"name", "entity_wire", "ca_name_wire", *FIELDS}
        empty = Session(name=GW1).describe()
        assert empty["entity"] is None and empty["entity_wire"] is None
        assert empty["expire_time"] == "50%"

    def test_frozen(self) -> None:
        s = Session(name=GW1)
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.entity = "CN=x"  # type: ignore[misc]

    def test_key_file_and_auth_defaults(self, tmp_path: Path) -> None:
        paths = Paths(tmp_path / "c", tmp_path / "s", tmp_path / "w")
        s = set_fields(Session(name=GW1), {"key": "k1"})
        assert session_key_file(s, paths) == paths.key_file("k1")
        # No certificate yet: no default authentication certificate.
        assert auth_credentials(s, paths) == (None, paths.key_file("k1"))
        paths.x509_dir.mkdir(parents=True)
        paths.cert_file("gw1").write_bytes(b"")
        assert auth_credentials(s, paths) == (paths.cert_file("gw1"), paths.key_file("k1"))
        ext = set_fields(s, {"auth_cert": "/x.crt", "auth_key": "/x.key"})
        assert auth_credentials(ext, paths) == (Path("/x.crt"), Path("/x.key"))


class TestMacSecret:
    @pytest.fixture(autouse=True)
    def _private_files(self) -> Iterator[None]:
        """Files written here are 0600, as a MAC secret file must be."""
        old = os.umask(0o077)
        yield
        os.umask(old)

    @pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
    def test_a_file_others_may_read_is_refused(self, tmp_path: Path, mode: int) -> None:
        secret = tmp_path / "secret"
        secret.write_bytes(b"TOPSECRET\n")
        secret.chmod(mode)
        s = set_fields(Session(name=GW1), {"mac_secret_file": str(secret)})
        with pytest.raises(ConfigError) as info:
            read_mac_secret(s)
        assert f"{mode:04o}" in str(info.value) and info.value.hint == f"chmod 600 {secret}"
        assert "TOPSECRET" not in str(info.value)
        secret.chmod(0o400)
        assert read_mac_secret(s) == b"TOPSECRET"

    def test_a_fifo_is_refused_without_waiting_for_a_writer(self, tmp_path: Path) -> None:
        # opening a FIFO for reading waits for a writer: serve would hang, every session
        # with it, on a secret path someone replaced with a FIFO
        import threading

        secret = tmp_path / "secret"
        os.mkfifo(secret, 0o600)
        outcome: list[BaseException | bytes] = []

        def read() -> None:
            try:
                s = set_fields(Session(name=GW1), {"mac_secret_file": str(secret)})
                outcome.append(read_mac_secret(s))
            except BaseException as e:
                outcome.append(e)

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(5)
        if t.is_alive():  # release the reader before failing
            fd = os.open(secret, os.O_WRONLY)
            os.close(fd)
            t.join(5)
            pytest.fail("reading a FIFO as the MAC secret file waited for a writer")
        (e,) = outcome
        assert isinstance(e, ConfigError) and "not a regular file" in str(e), e
        # the token's PIN file is read the same way
        from swcmp.keystore.pkcs11 import read_pin

        t = threading.Thread(target=lambda: outcome.append(
            _raised(lambda: read_pin(secret, session="gw1"))), daemon=True)
        t.start()
        t.join(5)
        if t.is_alive():
            os.close(os.open(secret, os.O_WRONLY))
            t.join(5)
            pytest.fail("reading a FIFO as the PIN file waited for a writer")
        assert isinstance(outcome[-1], ConfigError) and "not a regular file" in str(outcome[-1])

    def test_read_strips_one_newline(self, tmp_path: Path) -> None:
        secret = tmp_path / "secret"
        secret.write_bytes(b"s3cr3t\n")
        s = set_fields(Session(name=GW1), {"mac_secret_file": str(secret)})
        assert read_mac_secret(s) == b"s3cr3t"
        secret.write_bytes(b"s3cr3t\r\n")
        assert read_mac_secret(s) == b"s3cr3t"
        secret.write_bytes(b"s3cr3t\n\n")
        assert read_mac_secret(s) == b"s3cr3t\n"

    def test_secret_never_in_repr_or_file(self, tmp_path: Path) -> None:
        secret = tmp_path / "secret"
        secret.write_bytes(b"TOPSECRET")
        s = set_fields(Session(name=GW1), {"mac_secret_file": str(secret)})
        assert read_mac_secret(s) == b"TOPSECRET"
        assert "TOPSECRET" not in repr(s)
        assert "TOPSECRET" not in session_to_toml(s)

    @pytest.mark.parametrize(
        "content", [None, b"", b"\n", b"Z" * 5000], ids=["missing", "empty", "newline", "huge"]
    )
    def test_errors(self, tmp_path: Path, content: bytes | None) -> None:
        secret = tmp_path / "secret"
        if content is not None:
            secret.write_bytes(content)
        s = set_fields(Session(name=GW1), {"mac_secret_file": str(secret)})
        with pytest.raises(ConfigError) as info:
            read_mac_secret(s)
        assert str(secret) in str(info.value)
        assert "ZZZZ" not in str(info.value)

    def test_not_configured(self) -> None:
        with pytest.raises(ConfigError, match="--mac-secret-file"):
            read_mac_secret(Session(name=GW1))

    def test_directory(self, tmp_path: Path) -> None:
        s = set_fields(Session(name=GW1), {"mac_secret_file": str(tmp_path)})
        with pytest.raises(ConfigError, match=r"regular file|Is a directory"):
            read_mac_secret(s)


class TestToml:
    def test_escapes(self) -> None:
        values = {"a": 'q"b\\s\n\t\x01\x7f é', "b": True, "c": -3, "d": ["x", ""], "e": []}
        text = dumps_toml(values)  # type: ignore[arg-type]
        assert tomllib.loads(text) == values
        assert "\x01" not in text

    def test_header_and_quoted_key(self) -> None:
        text = dumps_toml({"a b": "x"}, header=["line one", "line two"])
        assert text.startswith("# line one\n# line two\n")
        assert tomllib.loads(text) == {"a b": "x"}

    def test_long_list_multiline(self) -> None:
        values = {"l": [f"item-{i:03d}" for i in range(20)]}
        text = dumps_toml(values)
        assert text.count("\n") > 20
        assert tomllib.loads(text) == values

    def test_bad_types(self) -> None:
        with pytest.raises(TypeError):
            dumps_toml({"f": 1.5})  # type: ignore[dict-item]
        with pytest.raises(TypeError):
            dumps_toml({"l": [1]})  # type: ignore[list-item]
        with pytest.raises(ValueError):
            dumps_toml({"i": 2**64})
        with pytest.raises(ValueError):
            dumps_toml({"s": "\ud800"})

    @given(
        st.dictionaries(
            st.text(min_size=1, max_size=10),
            st.one_of(
                st.text(),
                st.booleans(),
                st.integers(min_value=-(2**63), max_value=2**63 - 1),
                st.lists(st.text(), max_size=5),
            ),
            max_size=8,
        )
    )
    def test_round_trip(self, values: dict[str, str | bool | int | list[str]]) -> None:
        assert tomllib.loads(dumps_toml(values)) == values

    def test_session_round_trip(self, tmp_path: Path) -> None:
        s = _full_session(tmp_path)
        text = session_to_toml(s)
        assert session_from_toml("gw1", text, path=tmp_path / "gw1.toml") == s
        data = tomllib.loads(text)
        assert data["format"] == 1
        assert data["expire_time"] == "30d"
        assert "name" not in data

    def test_percent_stored_as_int(self) -> None:
        assert tomllib.loads(session_to_toml(Session(name=GW1)))["expire_time"] == 50

    def test_hand_written_file(self, tmp_path: Path) -> None:
        text = (
            "# written by an admin\n"
            "entity = '/C=DE/CN=gw1'\n"
            "expire_time = '75%'\n"
            "regenerate = true\n"
            "connections = ['a']\n"
        )
        s = session_from_toml("gw1", text, path=tmp_path / "gw1.toml")
        assert s.expire_time.percent == 75
        assert s.connections == ("a",)


def _store(tmp_path: Path) -> SessionStore:
    return SessionStore(tmp_path / "etc")


class TestStore:
    def test_create_load_save_delete(self, tmp_path: Path) -> None:
        store = _store(tmp_path)
        created = store.create("gw1")
        assert store.exists("gw1")
        assert store.load("gw1") == created
        path = store.path_for("gw1")
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        changed = set_fields(created, {"server_url": "https://ca.example.net/"})
        store.save(changed)
        assert store.load("gw1") == changed
        store.delete("gw1")
        assert not store.exists("gw1")
        with pytest.raises(ConfigError, match="no session named gw1"):
            store.load("gw1")
        with pytest.raises(ConfigError, match="no session named gw1"):
            store.delete("gw1")

    def test_create_with_values(self, tmp_path: Path) -> None:
        s = _store(tmp_path).create("gw1", {"entity": "/CN=gw1"})
        assert s.entity == "/CN=gw1"

    def test_create_twice(self, tmp_path: Path) -> None:
        store = _store(tmp_path)
        store.create("gw1", {"entity": "/CN=gw1"})
        with pytest.raises(ConfigError, match="already exists"):
            store.create("gw1")
        assert store.load("gw1").entity == "/CN=gw1"  # not overwritten

    @pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", ""])
    def test_path_tricks_write_nothing(self, tmp_path: Path, name: str) -> None:
        store = _store(tmp_path)
        with pytest.raises(ConfigError, match="invalid session name"):
            store.create(name)
        assert not tmp_path.joinpath("x").exists()
        assert not store.sessions_dir.exists() or list(store.sessions_dir.iterdir()) == []

    def test_update_and_unset(self, tmp_path: Path) -> None:
        store = _store(tmp_path)
        store.create("gw1")
        s = store.update("gw1", set_values={"san": ["DNS:a.example"], "mac-ref": "r"})
        assert s.sans == ("DNS:a.example",)
        s = store.update("gw1", unset=["mac_ref"], set_values={"key": "k"})
        assert s.mac_ref is None
        assert store.load("gw1") == s

    def test_update_invalid_writes_nothing(self, tmp_path: Path) -> None:
        store = _store(tmp_path)
        store.create("gw1", {"entity": "/CN=gw1"})
        before = store.path_for("gw1").read_bytes()
        with pytest.raises(ConfigError):
            store.update("gw1", set_values={"entity": "/CN=ok", "server_url": "gopher://x"})
        assert store.path_for("gw1").read_bytes() == before

    def test_list_reports_bad_files_and_keeps_good_ones(self, tmp_path: Path) -> None:
        store = _store(tmp_path)
        store.create("a-good")
        store.create("z-good")
        d = store.sessions_dir
        (d / "syntax.toml").write_text("entity = '/CN=x'\nserver_url = \n")
        (d / "unknown.toml").write_text("entity = '/CN=x'\n\nserverurl = 'http://x/'\n")
        (d / "badvalue.toml").write_text("# c\nkey_type = 'rsa:512'\n")
        (d / "badtype.toml").write_text("regenerate = 'perhaps'\n")
        (d / "nested.toml").write_text("[entity]\ncn = 'x'\n")
        (d / "binary.toml").write_bytes(b"entity = '/CN=x'\n\xff\xfe\n")
        (d / "bad name.toml").write_text("")
        (d / "format.toml").write_text("format = 2\n")
        (d / ".gw1.toml.tmp-abc").write_text("garbage")  # a crashed write's leftover
        (d / "notes.txt").write_text("ignored")

        listing = store.list()
        assert [s.name for s in listing.sessions] == ["a-good", "z-good"]
        errors = {Path(e.path).name: e for e in listing.errors}
        assert set(errors) == {
            "syntax.toml",
            "unknown.toml",
            "badvalue.toml",
            "badtype.toml",
            "nested.toml",
            "binary.toml",
            "bad name.toml",
            "format.toml",
        }
        for name, err in errors.items():
            assert isinstance(err, SessionFileError)
            assert str(d / name) in str(err)
        assert errors["syntax.toml"].line == 2
        assert "line 2" in str(errors["syntax.toml"])
        assert errors["unknown.toml"].line == 3
        assert "serverurl" in str(errors["unknown.toml"])
        assert errors["badvalue.toml"].line == 2
        assert "key_type" in str(errors["badvalue.toml"])
        assert errors["badtype.toml"].line == 1
        assert errors["binary.toml"].line == 2

    def test_load_bad_file_names_the_file(self, tmp_path: Path) -> None:
        store = _store(tmp_path)
        store.create("gw1")
        store.path_for("gw1").write_text("server_url = 'http://'\n")
        with pytest.raises(SessionFileError) as info:
            store.load("gw1")
        assert f"{store.path_for('gw1')}:1:" in str(info.value)
        assert info.value.path == str(store.path_for("gw1"))

    def test_list_empty_when_no_directory(self, tmp_path: Path) -> None:
        listing = _store(tmp_path).list()
        assert listing.sessions == () and listing.errors == ()


# ---------------------------------------------------------------------- timeout, mutual TLS


@pytest.mark.parametrize(("given_", "stored"), [(60, 60), ("30", 30), ("5s", 5), (600, 600)])
def test_timeout_takes_whole_seconds(given_: object, stored: int) -> None:
    assert set_fields(Session(name=GW1), {"timeout": given_}).timeout == stored


@pytest.mark.parametrize("bad", [0, 601, -1, "1m", 2.5, True, "x"])
def test_timeout_out_of_range_is_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        set_fields(Session(name=GW1), {"timeout": bad})


def test_timeout_default_and_round_trip(tmp_path: Path) -> None:
    assert Session(name=GW1).timeout == 60
    s = set_fields(Session(name=GW1), {"timeout": 7})
    assert session_from_toml("gw1", session_to_toml(s), path=tmp_path / "gw1.toml").timeout == 7


def test_tls_client_files_need_both_and_a_private_key(tmp_path: Path) -> None:
    from swcmp.session import tls_client_files

    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    key.chmod(0o644)
    assert tls_client_files(Session(name=GW1)) is None
    with pytest.raises(ConfigError, match="no --tls-client-key"):
        tls_client_files(set_fields(Session(name=GW1), {"tls_client_cert": str(cert)}))
    both = set_fields(Session(name=GW1), {"tls_client_cert": str(cert),
                                         "tls_client_key": str(key)})
    with pytest.raises(ConfigError, match="mode 0644") as ei:
        tls_client_files(both)
    assert ei.value.hint == f"chmod 600 {key}"
    key.chmod(0o600)
    assert tls_client_files(both) == (cert, key)


# ---------------------------------------------------------------------- one reading per pass


def test_inside_one_reading_an_unchanged_file_is_checked_once(tmp_path: Path) -> None:
    from swcmp import sessionfile

    store = SessionStore(tmp_path / "etc")
    store.create("gw1", {"entity": "/CN=gw1"})
    calls: list[str] = []
    real = sessionfile.session_from_toml

    def counting(name: str, text: str, *, path: Path) -> Session:
        calls.append(name)
        return real(name, text, path=path)

    sessionfile.session_from_toml = counting  # type: ignore[assignment]
    try:
        store.load("gw1")
        store.load("gw1")
        assert len(calls) == 2  # outside a pass, every load checks the file
        with sessionfile.one_reading():
            first = store.load("gw1")
            assert store.load("gw1") is first
            assert [s.name for s in store.list().sessions] == ["gw1"]
            assert len(calls) == 3
            store.update("gw1", set_values={"entity": "/CN=gw1-renamed"})
            changed = store.load("gw1")  # new bytes: read and checked again
            assert changed.entity == "/CN=gw1-renamed" and changed is not first
        after = store.load("gw1")
        assert after is not changed  # nothing is kept once the pass is over
        assert sessionfile._reading is None
    finally:
        sessionfile.session_from_toml = real  # type: ignore[assignment]


def test_a_pass_method_reads_sessions_once() -> None:
    from swcmp import sessionfile

    seen: list[object] = []

    @sessionfile.reads_sessions_once
    def pass_(x: int) -> int:
        seen.append(sessionfile._reading)
        return x + 1

    assert pass_(1) == 2 and seen == [{}]
    assert sessionfile._reading is None


def _raised(f: Callable[[], object]) -> BaseException | None:
    try:
        f()
    except BaseException as e:
        return e
    return None


# ---------------------------------------------------------------------- the fast reader


def _written_sessions() -> list[str]:
    long_trust = [f"/etc/swanctl/x509ca/a-rather-long-name-{i}.crt" for i in range(4)]
    sessions = [
        Session(name=GW1),
        set_fields(Session(name=GW1), {"entity": "/CN=gw1/O=Ex \"q\" \\ ü", "timeout": 7,
                                       "sans": ["DNS:gw1.example.net", "IP:192.0.2.1"],
                                       "server_url": "http://ca.example.net:8080/pkix/",
                                       "trust": long_trust, "expire_time": "30d",
                                       "auto_update": True}),
        set_fields(Session(name=GW1), {"trust": long_trust[:2], "mac_ref": "4711"}),
    ]
    return [session_to_toml(s) for s in sessions]


def test_the_fast_reader_reads_what_swcmp_writes_as_tomllib_does() -> None:
    from swcmp.sessionfile import _loads_plain

    texts = _written_sessions()
    taken = [t for t in texts if _loads_plain(t) is not None]
    assert len(taken) >= 2  # the common files never need tomllib (a multi-line list too)
    assert any("[\n" in t for t in taken)
    for text in texts:
        assert _loads_plain(text) in (None, tomllib.loads(text))


@pytest.mark.parametrize("text", [
    'a = "x" # comment\n', 'a = "x\\"y"\n', "a = 'x'\n", 'a = +1\n', "a = 1_000\n",
    "a = -0\n", "a = 0x10\n", "a = 1.5\n", "a = 99999999999999999999\n", "[t]\na = 1\n",
    "a.b = 1\n", '"a" = 1\n', " a = 1\n", "a = 1 \n", "a  = 1\n", "a = 1\r\n",
    "a = 1\na = 2\n", 'a = ["x",]\n', 'a = ["x" , "y"]\n', "a = [\n    \"x\"\n]\n",
    'a = [\n    "x",\n', "a = true\ntrue = false\n", "# a\tb\na = 1\n", "a = \"\x7f\"\n",
    "\ufeffa = 1\n", "a = [1]\n", "a = {}\n", "a =\n", "= 1\n", "a = \"\"\"x\"\"\"\n",
])
def test_the_fast_reader_leaves_the_rest_to_tomllib_or_agrees(text: str) -> None:
    from swcmp.sessionfile import _loads_plain

    try:
        expected: object = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        expected = None
    assert _loads_plain(text) in (None, expected)


def test_the_fast_reader_agrees_with_tomllib_on_mangled_files() -> None:
    import random

    from swcmp.sessionfile import _loads_plain

    rng = random.Random(24)
    alphabet = [*'"\\#[]=,.+-_ \n\t\r\x00\x7faz09ü\u2028', "true", "false", "    "]
    texts = _written_sessions()
    taken = 0
    for _ in range(3000):
        text = rng.choice(texts)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text) + 1)
            cut = rng.choice((0, 0, 1, 2))
            text = text[:at] + rng.choice(alphabet) * rng.randint(0, 1) + text[at + cut:]
        try:
            expected: object = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            expected = None
        got = _loads_plain(text)
        assert got in (None, expected), repr(text)
        taken += got is not None
    assert taken > 300  # the comparison covered documents the fast reader took
