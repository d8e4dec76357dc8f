"""The ``swcmp session`` setting options and the checks of the files they name."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from swcmp.choices import (
    GRANTED_WITH_MODS,
    IR_AUTH_MODES,
    KEY_TYPES,
    MAC_ALGS,
    OPERATION_PATHS,
    RENEW_WITH,
)

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


_OPTION_FIELDS = {
    "entity": "entity",
    "san": "sans",
    "ca_name": "ca_name",
    "server_url": "server_url",
    "profile_label": "profile_label",
    "operation_paths": "operation_paths",
    "operation_url": "operation_urls",
    "ir_auth": "ir_auth",
    "mac_ref": "mac_ref",
    "mac_secret_file": "mac_secret_file",
    "mac_alg": "mac_alg",
    "mac_iterations": "mac_iterations",
    "auth_cert": "auth_cert",
    "auth_key": "auth_key",
    "trust": "trust",
    "key": "key",
    "regenerate": "regenerate",
    "key_type": "key_type",
    "expire_time": "expire_time",
    "connection": "connections",
    "tls_ca_bundle": "tls_ca_bundle",
    "server_cert": "server_cert",
    "extra_certs": "extra_certs",
    "ignore_keyusage": "ignore_keyusage",
    "implicit_confirm": "implicit_confirm",
    "cert_profile": "cert_profile",
    "timeout": "timeout",
    "tls_client_cert": "tls_client_cert",
    "tls_client_key": "tls_client_key",
    "revoke_superseded": "revoke_superseded",
    "granted_with_mods": "granted_with_mods",
    "renew_with": "renew_with",
    "poll_limit": "poll_limit",
    "ask_template": "ask_template",
    "pkcs11_module": "pkcs11_module",
    "pin_file": "pin_file",
}


def setting_options(f: F) -> F:
    """The options of ``session create`` and ``session set``, one per setting."""
    options = [
        click.option(
            "--entity",
            metavar="DN",
            help="Subject DN put in requests; needs a common name. RFC 4514 "
            "(CN=gw1,O=Example,C=DE) or slash form (/C=DE/O=Example/CN=gw1).",
        ),
        click.option(
            "--san",
            metavar="TYPE:VALUE",
            multiple=True,
            help="subjectAltName: DNS:name, IP:address, EMAIL:address or URI:uri. "
            "Repeat for several; the names given replace the stored list.",
        ),
        click.option(
            "--ca-name",
            metavar="DN",
            help="DN of the CA (request recipient; selects the trust anchor). "
            "RDN order must match the CA certificate.",
        ),
        click.option(
            "--server-url",
            metavar="URL",
            help="Where CMP messages are POSTed, http:// or https:// "
            "(e.g. http://ca.example.net:8080/pkix/).",
        ),
        click.option(
            "--profile-label",
            metavar="LABEL",
            help="RFC 9811 profile label: messages go to /.well-known/cmp/p/LABEL on the "
            "server URL's host (the server URL then has no path of its own).",
        ),
        click.option(
            "--operation-paths",
            type=click.Choice(OPERATION_PATHS),
            help="How each message's path is formed: none (default: every message to the "
            "server URL), labels (RFC 9483 operation labels added: .../initialization, "
            ".../keyupdate, .../getcacerts; certConf and pollReq go where their request "
            "went) or body (the body type added: .../ir, .../certConf; Siemens Mock CA).",
        ),
        click.option(
            "--operation-url",
            metavar="OPERATION=URL",
            multiple=True,
            help="The URL of one operation (ir, cr, kur, p10cr, rr, genm or an RFC 9483 "
            "label such as keyupdate or getcacerts), for CAs with an alias per operation; "
            "wins over --operation-paths. Repeat for several; the ones given replace the "
            "stored list.",
        ),
        click.option(
            "--ir-auth",
            type=click.Choice(IR_AUTH_MODES),
            help="How an initial request (IR) is authenticated: mac (reference + shared "
            "secret, default) or signature (--auth-cert/--auth-key from another CA).",
        ),
        click.option(
            "--mac-ref",
            metavar="REF",
            help="MAC reference value (senderKID) the CA operator gave out of band.",
        ),
        click.option(
            "--mac-secret-file",
            metavar="FILE",
            help="File holding only the shared MAC secret (mode 0600). "
            "The secret is read when needed and never shown.",
        ),
        click.option(
            "--mac-alg",
            type=click.Choice(MAC_ALGS),
            help="MAC algorithm: hmac-sha256 (default) or hmac-sha1 (legacy CAs only), "
            "both PasswordBasedMac, or pbmac1 (PBMAC1: PBKDF2 and HMAC-SHA256, RFC 9481).",
        ),
        click.option(
            "--granted-with-mods",
            type=click.Choice(GRANTED_WITH_MODS),
            help="A certificate the CA granted with modifications: check (default: taken "
            "only when subject, SANs and key are the ones asked), accept (taken, logged; "
            "the key must still be ours) or reject (refused in certConf).",
        ),
        click.option(
            "--renew-with",
            type=click.Choice(RENEW_WITH),
            help="How a renewal asks for the new certificate: kur (key update, default), cr "
            "(a certificate request signed with the current certificate) or p10cr (a PKCS#10 "
            "request signed by the new key, the message signed with the current certificate), "
            "for CAs whose policy refuses key updates.",
        ),
        click.option(
            "--poll-limit",
            metavar="DURATION",
            help="How long a renewal's CA transaction that the CA keeps answering 'waiting' "
            "is polled, across runs, counted from its request (1s-30d, default 1d); then it "
            "is abandoned (its new key destroyed) and the next attempt starts a new one.",
        ),
        click.option(
            "--mac-iterations",
            metavar="N",
            type=int,
            help="Iteration count of the MAC key derivation (100-100000, default 10000).",
        ),
        click.option(
            "--auth-cert",
            metavar="FILE",
            help="Certificate that signs requests (IR with --ir-auth signature, CR). "
            "Default: the session's own certificate once it has one.",
        ),
        click.option(
            "--auth-key",
            metavar="FILE",
            help="Private key of --auth-cert. Default: the session's key pair.",
        ),
        click.option(
            "--trust",
            metavar="FILE",
            multiple=True,
            help="CA certificate(s) that verify signed responses (PEM or DER). "
            "Repeat for several; the files given replace the stored list.",
        ),
        click.option(
            "--key",
            metavar="NAME|URI",
            help="Key pair name: private/NAME.key under the swanctl directory. An existing "
            "key is used as it is, a missing one is generated at the first request. "
            "`create` defaults it to the session name. Or a PKCS#11 URI "
            "(pkcs11:token=LABEL;object=LABEL) for keys made and kept in a token, with "
            "--pkcs11-module and --pin-file.",
        ),
        click.option(
            "--regenerate/--no-regenerate",
            default=None,
            help="Make a fresh key at each update (kept aside until the new certificate is "
            "verified) instead of re-certifying the same key. Default: no.",
        ),
        click.option(
            "--key-type",
            type=click.Choice(KEY_TYPES),
            help="Type of newly generated keys (default rsa:3072).",
        ),
        click.option(
            "--expire-time",
            metavar="PERCENT|DURATION",
            help="When to renew. A PERCENT (10-100, default 50) is the share of the "
            "validity period that must still REMAIN: 50 renews half-way, 20 when a fifth "
            "is left. Or an absolute DURATION before expiry: 30d, 12h, 1d12h, 90m. "
            "Never before a tenth of the validity period has passed, counted from "
            "notBefore and from when swcmp received the certificate (at least 5 s): no "
            "renewal loops; `session set` warns about values that ask for sooner.",
        ),
        click.option(
            "--connection",
            metavar="CONN",
            multiple=True,
            help="swanctl.conf connection that uses this certificate. Repeat for several; "
            "the names given replace the stored list.",
        ),
        click.option(
            "--tls-ca-bundle",
            metavar="FILE",
            help="CA bundle that verifies an https:// server (default: the system store).",
        ),
        click.option(
            "--server-cert",
            metavar="FILE",
            multiple=True,
            help="Pin the CMP server's signing certificate: answers it signs are trusted "
            "without a chain or extendedKeyUsage (like openssl cmp -srvcert). Repeat for "
            "several; the files given replace the stored list.",
        ),
        click.option(
            "--extra-certs",
            metavar="FILE",
            multiple=True,
            help="Certificates added to the extraCerts of signed requests, after the "
            "signer's chain (e.g. the root, for CAs that want it). Repeat for several.",
        ),
        click.option(
            "--ignore-keyusage/--no-ignore-keyusage",
            default=None,
            help="Accept answers signed by a certificate whose keyUsage lacks "
            "digitalSignature (CAs signing with a keyCertSign-only root). Default: no.",
        ),
        click.option(
            "--ask-template/--no-ask-template",
            default=None,
            help="Ask the CA's certificate request template (genm certReqTemplate, RFC 9483 "
            "4.3.3) before an initial request and a key update with a new key, and refuse "
            "a key type or subject it forbids before sending. Default: yes.",
        ),
        click.option(
            "--implicit-confirm/--no-implicit-confirm",
            default=None,
            help="Ask the CA to grant implicitConfirm (no certConf/pkiConf round trip). "
            "Default: no.",
        ),
        click.option(
            "--cert-profile",
            metavar="NAME",
            help="Certificate profile named in requests (generalInfo certProfile, "
            "RFC 9483 3.1), for CAs that select the profile per request.",
        ),
        click.option(
            "--timeout",
            metavar="SECONDS",
            type=int,
            help="Total time one exchange with the CA may take, from connecting to the "
            "last byte of its answer (1-600, default 60). Polling a CA that answered "
            "'waiting' has its own limit.",
        ),
        click.option(
            "--tls-client-cert",
            metavar="FILE",
            help="TLS client certificate (PEM) for a CA behind mutual TLS (https://); "
            "give --tls-client-key with it.",
        ),
        click.option(
            "--tls-client-key",
            metavar="FILE",
            help="Private key of --tls-client-cert (PEM, unencrypted, mode 0600).",
        ),
        click.option(
            "--revoke-superseded/--no-revoke-superseded",
            default=None,
            help="After each key update, revoke the replaced certificate (rr, reason "
            "superseded); a failed revocation is retried and never undoes the renewal. "
            "Default: no.",
        ),
        click.option(
            "--pkcs11-module",
            metavar="PATH",
            help="PKCS#11 module of the token that holds a pkcs11: --key (e.g. "
            "/usr/lib/softhsm/libsofthsm2.so, libtpm2_pkcs11.so).",
        ),
        click.option(
            "--pin-file",
            metavar="FILE",
            help="File holding only the token's user PIN (mode 0600). Read when needed, "
            "never shown or logged.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _setting_values(params: Mapping[str, Any]) -> dict[str, object]:
    """The settings given on the command line, by field name (unused options left out)."""
    values: dict[str, object] = {}
    for param, field_name in _OPTION_FIELDS.items():
        value = params.get(param)
        if value is None or (isinstance(value, tuple) and not value):
            continue
        values[field_name] = list(value) if isinstance(value, tuple) else value
    return values
