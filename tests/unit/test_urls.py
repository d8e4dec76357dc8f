"""Where each CMP message goes: server URL checks, the RFC 9811 profile path, RFC 9483
operation labels, body-type paths and explicit per-operation URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from swcmp.cmp import oids
from swcmp.cmp.urls import (
    Endpoints,
    Route,
    append_path,
    check_server_url,
    operation_of,
    parse_operation_urls,
    with_profile,
)
from swcmp.enroll import session_endpoints
from swcmp.errors import ConfigError
from swcmp.session import Session, field_name, set_fields, unset_fields
from swcmp.sessionfile import SessionStore


@pytest.mark.parametrize("url", [
    "ftp://ca.example.net/", "http://", "http://user:pw@ca.example.net/",
    "http://ca.example.net:0/", "http://ca.example.net/#x", "http://ca.example.net/a b",
    "http://[::zz]/",
])
def test_bad_urls_refused_for_each_operation_too(url: str) -> None:
    with pytest.raises(ConfigError):
        check_server_url(url)
    with pytest.raises(ConfigError) as e:
        parse_operation_urls([f"kur={url}"])
    assert e.value.setting == "operation_urls"


def test_credentials_never_echoed() -> None:
    with pytest.raises(ConfigError) as e:
        check_server_url("https://admin:s3cret@ca.example.net/")
    assert "s3cret" not in str(e.value)


def test_append_path_keeps_query_and_one_slash() -> None:
    assert append_path("http://ca:80/pkix/", "ir") == "http://ca:80/pkix/ir"
    assert append_path("http://ca/pkix", "certConf") == "http://ca/pkix/certConf"
    assert append_path("http://ca", "genm") == "http://ca/genm"
    assert append_path("http://ca/x?alias=gw", "kur") == "http://ca/x/kur?alias=gw"


def test_profile_label_path() -> None:
    assert with_profile("https://ca.example.net", "gw") == \
        "https://ca.example.net/.well-known/cmp/p/gw"
    assert with_profile("https://ca.example.net/.well-known/cmp/", "gw") == \
        "https://ca.example.net/.well-known/cmp/p/gw"
    with pytest.raises(ConfigError) as e:
        with_profile("https://ca.example.net/pkix/", "gw")
    assert e.value.setting == "profile_label"
    with pytest.raises(ConfigError):
        Endpoints.build("https://ca.example.net", profile_label="a/b")


@pytest.mark.parametrize("label", [".", ".."])
def test_a_dot_segment_is_no_profile_label(label: str) -> None:
    """'.' and '..' are made of allowed characters but are dot-segments: the CA's server
    removes them (RFC 3986 5.2.4), so /.well-known/cmp/p/../keyupdate would reach
    /.well-known/cmp/keyupdate, not a profile."""
    with pytest.raises(ConfigError) as e:
        Endpoints.build("https://ca.example.net", profile_label=label)
    assert e.value.setting == "profile_label"


def test_operations_of_bodies_and_genm() -> None:
    assert operation_of("ir") == "initialization"
    assert operation_of("cr") == "certification"
    assert operation_of("kur") == "keyupdate"
    assert operation_of("p10cr") == "pkcs10"
    assert operation_of("rr") == "revocation"
    assert operation_of("genm", oids.IT_CA_CERTS) == "getcacerts"
    assert operation_of("genm", oids.IT_ROOT_CA_CERT) == "getrootupdate"
    assert operation_of("genm", oids.IT_CERT_REQ_TEMPLATE) == "getcertreqtemplate"
    assert operation_of("genm", oids.IT_CRL_STATUS_LIST) == "getcrls"
    assert operation_of("genm", oids.IT_CURRENT_CRL) == "getcrls"
    assert operation_of("genm", "1.2.3") is None


def test_labels_under_a_profile() -> None:
    ep = Endpoints.build("https://ca.example.net", paths="labels", profile_label="gw")
    base = "https://ca.example.net/.well-known/cmp/p/gw"
    route = ep.route("keyupdate", "kur")
    # the kur, its pollReq and its certConf all go to the operation's URL
    assert {route.message_url(b) for b in ("kur", "pollReq", "certConf")} == \
        {base + "/keyupdate"}
    assert ep.route("getcacerts", "genm").message_url("genm") == base + "/getcacerts"
    assert ep.route(None, "genm").message_url("genm") == base
    assert not ep.single


def test_body_paths_send_each_message_to_its_body_type() -> None:
    ep = Endpoints.build("http://127.0.0.1:5000/issuing", paths="body")
    route = ep.route("initialization", "ir")
    assert route.message_url("ir") == "http://127.0.0.1:5000/issuing/ir"
    assert route.message_url("certConf") == "http://127.0.0.1:5000/issuing/certConf"
    assert route.message_url("pollReq") == "http://127.0.0.1:5000/issuing/pollReq"


def test_explicit_urls_win_and_genm_covers_every_general_message() -> None:
    ep = Endpoints.build("https://ejbca/cmp/ir-mac", paths="labels", operation_urls=[
        "kur=https://ejbca/cmp/kur-sig", "genm=https://ejbca/cmp/genm",
        "getcrls=https://ejbca/cmp/crl"])
    assert ep.route("keyupdate", "kur") == Route("https://ejbca/cmp/kur-sig")
    assert ep.route("keyupdate", "kur").message_url("certConf") == "https://ejbca/cmp/kur-sig"
    assert ep.route("getcacerts", "genm").url == "https://ejbca/cmp/genm"
    assert ep.route("getcrls", "genm").url == "https://ejbca/cmp/crl"
    assert ep.route("initialization", "ir").url == "https://ejbca/cmp/ir-mac/initialization"


def test_default_is_one_url() -> None:
    ep = Endpoints.build("http://ca/pkix/")
    assert ep.single
    assert {ep.route(op, "x").message_url("certConf") for op in ("initialization", None)} \
        == {"http://ca/pkix/"}


def test_operation_url_items() -> None:
    assert parse_operation_urls(["KUR=http://ca/k", "getcacerts=http://ca/g"]) == (
        "keyupdate=http://ca/k", "getcacerts=http://ca/g")
    for bad in (["http://ca/k"], ["renew=http://ca/k"],
                ["kur=http://ca/a", "keyupdate=http://ca/b"]):
        with pytest.raises(ConfigError):
            parse_operation_urls(bad)


# --- the session settings -------------------------------------------------------------

def test_session_settings_are_checked_stored_and_reloaded(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    s = store.create("gw", {"server_url": "https://ca.example.net", "profile_label": "gw",
                            "operation_paths": "LABELS",
                            "operation_url": ["kur=https://ca.example.net/kur"]})
    assert s.operation_paths == "labels"
    assert s.operation_urls == ("keyupdate=https://ca.example.net/kur",)
    again = store.load("gw")
    assert again == s
    text = (tmp_path / "sessions" / "gw.toml").read_text()
    assert 'operation_urls = ["keyupdate=https://ca.example.net/kur"]' in text, text
    ep = session_endpoints(again)
    assert ep.route("initialization", "ir").url == \
        "https://ca.example.net/.well-known/cmp/p/gw/initialization"
    assert ep.route("keyupdate", "kur").url == "https://ca.example.net/kur"
    assert field_name("--operation-url") == "operation_urls"
    back = unset_fields(again, ["operation_urls", "profile_label", "operation_paths"])
    assert session_endpoints(back).single


def test_a_profile_label_needs_a_server_url_without_path() -> None:
    with pytest.raises(ConfigError) as e:
        Session(name="gw", server_url="https://ca.example.net/pkix/", profile_label="gw")
    assert "swcmp session unset gw profile_label" in e.value.hint
    s = Session(name="gw", server_url="https://ca.example.net/pkix/")
    with pytest.raises(ConfigError):
        set_fields(s, {"profile_label": "gw"})
    for bad in ({"operation_paths": "path"}, {"profile_label": ""},
                {"operation_urls": ["kur=ftp://ca/"]}):
        with pytest.raises(ConfigError):
            set_fields(s, bad)


def test_default_session_routes_nothing() -> None:
    s = Session(name="gw", server_url="http://ca/pkix/")
    assert s.operation_paths == "none" and s.operation_urls == ()
    assert session_endpoints(s).single


def test_the_ansible_module_normalizes_operation_urls_as_swcmp_stores_them() -> None:
    """The module compares declared and shown values: its normalization must be swcmp's,
    or a play declaring ``kur=...`` would change the session on every run."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "ansible/plugins/module_utils/swcmp_cli.py"
    spec = importlib.util.spec_from_file_location("swcmp_cli", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("ir", "CR", "kur", "p10cr", "rr", "genm", "keyupdate", "GetCRLs"):
        item = f" {name} =https://ca.example.net/{name}"
        assert module.normalize_operation_url(item) == parse_operation_urls([item])[0]
