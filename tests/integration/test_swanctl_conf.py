"""swcmp.strongswan.swanctl_conf: the settings parser and the load-conn messages it builds.

The last tests run the real ``swanctl --load-conns`` against a fake VICI
socket that records what swanctl sends, and compare those bytes with the
serialized message :func:`build_load_conn` builds (no charon, no root: only
the swanctl binary).
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import struct
import subprocess
import textwrap
import threading
from pathlib import Path

import pytest
from vici.protocol import Message

from swcmp.errors import ConfigError
from swcmp.strongswan.load_conn import (
    LoadConnError,
    build_load_conn,
    cert_references,
    connections_using_cert,
    split_list,
)
from swcmp.strongswan.swanctl_conf import (
    ConfSyntaxError,
    parse_file,
    parse_string,
)

SWANCTL = shutil.which("swanctl") or "/usr/sbin/swanctl"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# --------------------------------------------------------------------------- syntax


def test_sections_values_and_comments() -> None:
    conf = parse_string(textwrap.dedent("""\
        # a comment
        a {   # comment after a brace
          k1 = one two   three  # words joined by one space
          k2=x=y{z
          k3 = "  quoted  " tail
          sub { deep = 1 }
          empty =
        }
        b
        {
          k = v}
        """))
    assert conf.to_dict() == {
        "a": {"k1": "one two three", "k2": "x=y{z", "k3": "  quoted   tail",
              "sub": {"deep": "1"}},
        "b": {"k": "v"},
    }
    a = conf.section("a")
    assert a is not None and a.get("empty") is None and "empty" in a.values
    assert conf.section("a.sub.none") is None


def test_string_escapes_and_multiline() -> None:
    conf = parse_string('k = "l1\n  l2\\tT\\n\\"q\\" \\\\ \\x join\\\nme"\nafter = 1\n', "f.conf")
    assert conf.get("k") == 'l1\n  l2\tT\n"q" \\ x joinme'
    assert conf.values["after"].line == 4  # line numbers count the lines inside strings


def test_merging_duplicate_sections_like_strongswan() -> None:
    conf = parse_string(textwrap.dedent("""\
        s { a = 1
            b = 2
            x { p = 1 } }
        t { }
        s { c = 3
            a = 10
            x { q = 2 }
            y { } }
        s { b = }
        """))
    s = conf.section("s")
    assert s is not None
    assert list(s.values) == ["a", "b", "c"]  # first definition keeps the position
    assert list(s.items()) == [("a", "10"), ("c", "3")]  # `b =` hides b
    assert list(s.sections) == ["x", "y"]
    assert conf.to_dict()["s"] == {"a": "10", "c": "3", "x": {"p": "1", "q": "2"}, "y": {}}
    assert list(conf.sections) == ["s", "t"]


def test_later_value_overrides_and_reappears_in_place() -> None:
    conf = parse_string("s {\n a = 1\n b = 2\n a =\n a = 3\n}\n")
    s = conf.section("s")
    assert s is not None and list(s.items()) == [("a", "3"), ("b", "2")]


def test_includes_relative_glob_sorted_inside_sections(tmp_path: Path) -> None:
    main = _write(tmp_path / "etc" / "swanctl.conf", """\
        connections {
          include conf.d/*.conf
          gw { version = 2 }
        }
        include "sub dir/extra.conf"
        include nothing/*.conf
        """)
    _write(tmp_path / "etc" / "conf.d" / "20-b.conf", "b { x = 2 }\ngw { local_addrs = 1.2.3.4 }\n")
    _write(tmp_path / "etc" / "conf.d" / "10-a.conf", "a { x = 1 }\ninclude ../inc/deeper\n")
    _write(tmp_path / "etc" / "conf.d" / "ignored.txt", "not { parsed }\n")
    _write(tmp_path / "etc" / "inc" / "deeper", "deep { y = 3 }\n")
    _write(tmp_path / "etc" / "sub dir" / "extra.conf", "secrets { }\n")
    warnings: list[str] = []
    conf = parse_file(main, warnings)
    conns = conf.section("connections")
    assert conns is not None
    assert list(conns.sections) == ["a", "deep", "b", "gw"]
    assert conf.to_dict()["connections"]["gw"] == {  # type: ignore[index]
        "local_addrs": "1.2.3.4", "version": "2"}
    assert "secrets" in conf.sections
    assert len(warnings) == 1 and "no files found matching" in warnings[0]
    assert f"{main}:6" in warnings[0]


def test_include_with_absolute_path_and_escaped_space(tmp_path: Path) -> None:
    _write(tmp_path / "a b.conf", "k = v\n")
    conf = parse_string(f"include {str(tmp_path).replace(' ', chr(92) + ' ')}/a\\ b.conf\n")
    assert conf.get("k") == "v"


def test_include_as_a_key_is_a_setting() -> None:
    assert parse_string("include = x\n").get("include") == "x"


def test_include_loop_is_an_error(tmp_path: Path) -> None:
    loop = _write(tmp_path / "loop.conf", "include loop.conf\n")
    with pytest.raises(ConfSyntaxError, match="nested deeper"):
        parse_file(loop)


@pytest.mark.parametrize(("text", "line", "message"), [
    ("a {\n b = 1\n", 2, "is not closed"),
    ("a = 1\n}\n", 2, "no section is open"),
    ("a {\n  b c = 1\n}\n", 2, "unexpected NAME [c]"),
    ('a {\n "b" = 1\n}\n', 2, "unexpected string"),
    ('a {\n b = "open\n\n', 2, "unterminated string"),
    ("a\n\n{\n}\n", 2, "expecting '{'"),
    ("a {\n = 1\n}\n", 2, "unexpected '='"),
    ("x\n", 1, "expecting '{'"),
    ("x y\n", 1, "expecting '=' or '{'"),
])
def test_syntax_errors_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfSyntaxError) as info:
        parse_string(text, "/etc/swanctl/swanctl.conf")
    err = info.value
    assert isinstance(err, ConfigError)
    assert err.line == line, str(err)
    assert str(err).startswith(f"/etc/swanctl/swanctl.conf:{line}: ")
    assert message in str(err)


def test_error_in_included_file_names_that_file(tmp_path: Path) -> None:
    main = _write(tmp_path / "swanctl.conf", "connections {\n  include conf.d/*.conf\n}\n")
    bad = _write(tmp_path / "conf.d" / "x.conf", "gw {\n  version = 2\n  local { \n}\n")
    with pytest.raises(ConfSyntaxError) as info:
        parse_file(main)
    # as in strongSwan the token stream goes on: the included file's unclosed `gw` takes
    # the including file's `}`, so `connections` is what is left open; a note names the file
    assert info.value.path == main and info.value.line == 3
    assert "section 'connections'" in str(info.value)
    assert f"{bad}:5: unbalanced braces: the file leaves 1 section(s) open" in str(info.value)


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        parse_file(tmp_path / "nope.conf")


@pytest.mark.parametrize(("value", "items"), [
    ("a,b", ["a", "b"]),
    (" a , b ,, c ", ["a", "b", "c"]),
    ("10.0.0.0/8[tcp/22], dynamic", ["10.0.0.0/8[tcp/22]", "dynamic"]),
    ('"x, y", z', ["x, y", "z"]),
    ("'q' ,r", ["q", "r"]),
    ("a\tb, c", ["a\tb", "c"]),  # only spaces are trimmed, as in strongSwan
    ("", []),
    (" , ", []),
])
def test_split_list(value: str, items: list[str]) -> None:
    assert split_list(value) == items


# --------------------------------------------------------------------------- load-conn


def _swanctl_tree(tmp_path: Path) -> Path:
    base = tmp_path / "swanctl"
    _write(base / "x509" / "a.pem", "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n")
    (base / "x509" / "b.der").parent.mkdir(parents=True, exist_ok=True)
    (base / "x509" / "b.der").write_bytes(b"\x30\x03\x02\x01\xff")
    _write(base / "x509ca" / "ca.pem", "CA PEM\n")
    _write(base / "pubkey" / "peer.pub", "PUB\n")
    _write(tmp_path / "elsewhere" / "abs.pem", "ABS\n")
    return base


def test_build_load_conn_lists_files_children(tmp_path: Path) -> None:
    base = _swanctl_tree(tmp_path)
    conf = parse_string(textwrap.dedent(f"""\
        connections {{
          gw {{
            version = 2
            local_addrs = 10.0.0.1, 10.0.0.2
            Proposals = aes256-sha256-ecp256
            vips = 0.0.0.0
            pools = p1, p2
            local {{
              certs = a.pem, b.der, {tmp_path}/elsewhere/abs.pem
              id = "CN=a, O=x"
              groups = g1,g2
              cert_policy = 1.2.3
            }}
            remote {{
              cacerts = ca.pem
              pubkeys = peer.pub, 0x0102:03, 0s{base64.b64encode(b"raw").decode()}
            }}
            children {{
              net {{
                local_ts = 10.1.0.0/16, 10.2.0.0/16
                remote_ts = dynamic
                esp_proposals = aes128gcm16
                ah_proposals = sha256
                start_action = start
              }}
            }}
          }}
        }}
        """))
    msg = build_load_conn(conf, "gw", base)
    gw = msg["gw"]
    assert isinstance(gw, dict)
    assert gw["version"] == "2"
    assert gw["local_addrs"] == ["10.0.0.1", "10.0.0.2"]
    assert gw["Proposals"] == ["aes256-sha256-ecp256"]  # list keys are case-insensitive
    assert gw["vips"] == ["0.0.0.0"] and gw["pools"] == ["p1", "p2"]
    assert gw["local"] == {
        "certs": [(base / "x509" / "a.pem").read_bytes(), b"\x30\x03\x02\x01\xff", b"ABS\n"],
        "id": "CN=a, O=x", "groups": ["g1", "g2"], "cert_policy": ["1.2.3"]}
    assert gw["remote"] == {"cacerts": [b"CA PEM\n"],
                            "pubkeys": [b"PUB\n", b"\x01\x02\x03", b"raw"]}
    assert gw["children"] == {"net": {
        "local_ts": ["10.1.0.0/16", "10.2.0.0/16"], "remote_ts": ["dynamic"],
        "esp_proposals": ["aes128gcm16"], "ah_proposals": ["sha256"],
        "start_action": "start"}}
    # the previous certificate's content instead of the file's, for a rollback
    old = build_load_conn(conf, "gw", base, overrides={base / "x509" / "a.pem": b"OLD"})
    assert old["gw"]["local"]["certs"][0] == b"OLD"  # type: ignore[index]


def test_build_load_conn_errors(tmp_path: Path) -> None:
    base = _swanctl_tree(tmp_path)
    conf = parse_string("connections {\n gw { local { certs = missing.pem } }\n}\n")
    with pytest.raises(LoadConnError, match=r"no connection 'other'.*gw"):
        build_load_conn(conf, "other", base)
    with pytest.raises(LoadConnError, match=r"connections\.gw\.local\.certs.*missing\.pem"):
        build_load_conn(conf, "gw", base)
    with pytest.raises(LoadConnError, match="no connections section"):
        build_load_conn(parse_string(""), "gw", base)


def test_connections_using_cert(tmp_path: Path) -> None:
    base = _swanctl_tree(tmp_path)
    os.symlink(base / "x509" / "a.pem", base / "x509" / "link.pem")
    conf = parse_string(textwrap.dedent(f"""\
        connections {{
          one {{ local {{ certs = a.pem }} }}
          two {{ local-1 {{ certs = b.der, link.pem }} local-2 {{ certs = a.pem }} }}
          three {{ local {{ id = a }} remote {{ certs = a.pem }} }}
          four {{ local {{ certs = {base}/x509/a.pem }} }}
          five {{ local {{ certs = 0x0102 }} }}
        }}
        """))
    assert connections_using_cert(conf, base, base / "x509" / "a.pem") == ("one", "two", "four")
    assert connections_using_cert(conf, base, base / "x509" / "b.der") == ("two",)
    assert connections_using_cert(conf, base, base / "x509" / "zzz.pem") == ()
    refs = cert_references(conf, base)
    assert [(r.connection, r.section) for r in refs] == [
        ("one", "local"), ("two", "local-1"), ("two", "local-1"), ("two", "local-2"),
        ("four", "local")]


# --------------------------------------------------------------------------- against swanctl


class _FakeVici:
    """A VICI socket that answers every command with success and records the requests."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.requests: list[tuple[str, bytes]] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(4)
        self.server.settimeout(20)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _recv(self, conn: socket.socket, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = conn.recv(count - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _serve(self) -> None:
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        with conn:
            while True:
                try:
                    (length,) = struct.unpack("!I", self._recv(conn, 4))
                    packet = self._recv(conn, length)
                except (EOFError, OSError):
                    return
                kind, name_len = packet[0], packet[1]
                name = packet[2:2 + name_len].decode()
                self.requests.append((name, packet[2 + name_len:]))
                if kind == 0:  # CMD_REQUEST
                    body: dict[str, object] = (
                        {"conns": []} if name == "get-conns" else {"success": "yes"})
                    reply = bytes([1]) + Message.serialize(body)
                else:  # event (un)registration
                    reply = bytes([5])
                conn.sendall(struct.pack("!I", len(reply)) + reply)

    def close(self) -> None:
        self.server.close()
        self.thread.join(5)


def _run_swanctl_load_conns(tmp_path: Path, conf_file: Path) -> list[tuple[str, bytes]]:
    sock = tmp_path / "fake.vici"
    fake = _FakeVici(sock)
    strongswan_conf = _write(tmp_path / "strongswan.conf", "swanctl { load = pem x509 }\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "STRONGSWAN_CONF": str(strongswan_conf)}
    try:
        proc = subprocess.run(
            [SWANCTL, "--load-conns", "--uri", f"unix://{sock}", "--file", str(conf_file)],
            capture_output=True, text=True, env=env, timeout=30, check=False)
    finally:
        fake.close()
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return [(name, body) for name, body in fake.requests if name == "load-conn"]


_RICH_CONF = """\
    # everything swanctl treats specially, spread over includes and repeated sections
    connections {
      gw {
        version = 2
        local_addrs = 10.0.0.1,  10.0.0.2
        remote_addrs = peer.example.org
        proposals = aes256-sha256-ecp256, aes128-sha256-modp3072
        Vips = 0.0.0.0, ::
        pools = pool-a,pool-b
        local-1 {
          auth = pubkey
          certs = a.pem, b.der, @ABS@
          id = "CN=gw, O=swcmp tests"
          cert_policy = 1.3.6.1.4.1.1, 1.3.6.1.4.1.2
        }
        remote {
          auth = pubkey
          cacerts = ca.pem
          pubkeys = peer.pub, 0x0a0b0c, 0sAAEC
          groups = "admins", users
          id = "quoted \\"inner\\" text"
        }
        include conf.d/*.conf
        dpd_delay =
      }
      second {
        local { certs = a.pem }
        children { c { start_action = trap } }
      }
      gw {
        unique = never
        version = 1
        dpd_delay = 30s
      }
    }
    secrets { ike-1 { secret = "not sent" } }
    """


def _rich_tree(tmp_path: Path) -> Path:
    base = _swanctl_tree(tmp_path)
    _write(base / "swanctl.conf", _RICH_CONF.replace("@ABS@", str(tmp_path / "elsewhere" /
                                                                   "abs.pem")))
    _write(base / "conf.d" / "children.conf", """\
        children {
          net {
            local_ts = 10.1.0.0/16, 10.2.0.0/16[tcp/443]
            remote_ts = dynamic
            esp_proposals = aes128gcm16-ecp256,   aes256gcm16
            ah_proposals = sha256
            start_action = start
            updown = "/usr/local/bin/updown --a \\"b c\\""
          }
          other { mode = pass }
        }
        """)
    return base


@pytest.mark.skipif(not Path(SWANCTL).exists(), reason="swanctl not installed")
def test_load_conn_messages_are_byte_identical_to_swanctl(tmp_path: Path) -> None:
    base = _rich_tree(tmp_path)
    conf_file = base / "swanctl.conf"
    sent = _run_swanctl_load_conns(tmp_path, conf_file)
    conf = parse_file(conf_file)
    connections = conf.section("connections")
    assert connections is not None and list(connections.sections) == ["gw", "second"]
    assert len(sent) == 2
    for (_, body), name in zip(sent, connections.sections, strict=True):
        ours = Message.serialize(build_load_conn(conf, name, base))
        assert ours == body, (Message.deserialize(body), build_load_conn(conf, name, base))


@pytest.mark.skipif(not Path(SWANCTL).exists(), reason="swanctl not installed")
def test_comparison_with_swanctl_detects_a_difference(tmp_path: Path) -> None:
    """The byte comparison above can fail: a changed file gives different bytes."""
    base = _rich_tree(tmp_path)
    conf_file = base / "swanctl.conf"
    sent = _run_swanctl_load_conns(tmp_path, conf_file)
    conf = parse_file(conf_file)
    changed = build_load_conn(conf, "gw", base,
                              overrides={base / "x509" / "a.pem": b"other content"})
    assert Message.serialize(changed) != sent[0][1]
