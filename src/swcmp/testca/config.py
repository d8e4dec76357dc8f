"""Settings of the test CA, validated once when they are made."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

from swcmp.cmp import keys
from swcmp.errors import FAILURE_BIT, ConfigError

#: Faults the CA can inject into its answers; every one must make a careful client refuse.
FAULTS = ("wrong-nonce", "bad-protection", "unprotected", "other-key",
          # genm answers a client must refuse: a caCerts certificate with the CA's name
          # but a stranger's signature, a newWithOld the old root did not sign, a CRL
          # signed by a stranger under the CA's name
          "foreign-ca-cert", "bad-new-with-old", "foreign-crl")

#: What ``template_key_types`` may name: swcmp's key types, and ``ecdsa`` for any curve.
TEMPLATE_KEY_TYPES = (*keys.KEY_TYPES, "ecdsa")

#: Largest request body accepted over HTTP; a CMP request with a few certificates is a few KiB.
DEFAULT_MAX_REQUEST = 64 * 1024

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str) -> timedelta:
    """A duration such as ``90s``, ``30m``, ``1h``, ``7d`` or a bare number of seconds.

    Raises:
        ConfigError: the text is not a positive duration.
    """
    m = _DURATION.match(text)
    if not m:
        raise ConfigError(f"bad duration {text!r}: use a number with s, m, h or d, e.g. 1h")
    value = timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2) or "s"])
    if value <= timedelta(0):
        raise ConfigError(f"duration {text!r} must be positive")
    return value


@dataclass(frozen=True, kw_only=True)
class CAConfig:
    """How the test CA behaves. Test knobs (``poll``, ``reject``, ``delay``, ``fault``) are off
    by default.

    Attributes:
        mac_ref: the reference value (senderKID) clients use with the shared secret.
        mac_secret: the shared secret for PasswordBasedMac; None disables MAC protection.
        validity: lifetime of issued certificates.
        key_type: key type of the CA key when it is first created (see ``swcmp.cmp.keys``).
        implicit_confirm: grant implicitConfirm when a request asks for it.
        poll: answer 'waiting' and deliver the certificate on the N-th pollReq (0: at once).
        check_after: the checkAfter seconds put in pollRep.
        reject: failInfo names: refuse every certificate request with these.
        delay: seconds to wait before answering any request.
        fault: one of :data:`FAULTS` to inject into successful answers, or None.
        transaction_timeout: how long an unfinished transaction is kept; its certificate is
            then dropped as unconfirmed.
        max_skew: largest accepted difference between a request's messageTime and our clock.
        max_request_size: largest HTTP request body accepted.
        signer_in_extra_certs: put the CA certificate that signs answers into their
            extraCerts; False sends answers whose signer the client must already hold
            (as OpenSSL's CMP server does with a self-signed signer).
        unique_public_keys: refuse (badCertTemplate) a public key this CA certified
            before for another subject, or in a certificate never confirmed (like
            EJBCA's "enforce unique public keys", on by default); the key of a
            subject's confirmed certificate may be certified again.
        label_paths: route by RFC 9483 3.3 operation labels: a request is taken only at
            a path ending in its label (``.../initialization`` for an ir,
            ``.../getcacerts`` for a genm asking caCerts, ...), and a certConf or pollReq
            only at the path where its transaction began; anything else gets HTTP 404.
            Off: every message at ``/`` or ``/pkix/``.
        template_key_types: the key types named in the certificate request template
            (genm certReqTemplate, RFC 9483 4.3.3) as its keySpec; ``ecdsa`` is any curve.
        template_subject: the subject DN of the template (its attributes must be in
            requests as given).
        template_unknown: answer genm certReqTemplate with an error, as a CA that does
            not know the question. Without any template setting the CA answers that it
            has no template.
    """

    mac_ref: bytes | None = None
    mac_secret: bytes | None = field(default=None, repr=False)
    validity: timedelta = timedelta(hours=1)
    key_type: str = "ecdsa:p256"
    implicit_confirm: bool = True
    poll: int = 0
    check_after: int = 1
    reject: tuple[str, ...] = ()
    delay: float = 0.0
    fault: str | None = None
    transaction_timeout: timedelta = timedelta(minutes=10)
    max_skew: timedelta = timedelta(minutes=10)
    max_request_size: int = DEFAULT_MAX_REQUEST
    signer_in_extra_certs: bool = True
    unique_public_keys: bool = True
    label_paths: bool = False
    template_key_types: tuple[str, ...] = ()
    template_subject: str | None = None
    template_unknown: bool = False

    def __post_init__(self) -> None:
        if (self.mac_ref is None) != (self.mac_secret is None):
            raise ConfigError("give both the MAC reference and the MAC secret file, or neither")
        if self.mac_secret is not None and not self.mac_secret:
            raise ConfigError("the MAC secret is empty: put the shared secret in the file")
        if self.mac_ref is not None and not self.mac_ref:
            raise ConfigError("the MAC reference is empty")
        if self.key_type not in keys.KEY_TYPES:
            raise ConfigError(
                f"unknown CA key type {self.key_type!r}: use one of {', '.join(keys.KEY_TYPES)}")
        if self.validity <= timedelta(0):
            raise ConfigError("the validity of issued certificates must be positive")
        if self.poll < 0 or self.check_after < 0 or self.delay < 0:
            raise ConfigError("--poll, --check-after and --delay must not be negative")
        for name in self.reject:
            if name not in FAILURE_BIT:
                raise ConfigError(
                    f"unknown failInfo {name!r} for --reject: use one of "
                    f"{', '.join(sorted(FAILURE_BIT, key=FAILURE_BIT.__getitem__))}")
        if self.fault is not None and self.fault not in FAULTS:
            raise ConfigError(f"unknown fault {self.fault!r}: use one of {', '.join(FAULTS)}")
        for t in self.template_key_types:
            if t not in TEMPLATE_KEY_TYPES:
                raise ConfigError(f"unknown template key type {t!r}: use one of "
                                  f"{', '.join(TEMPLATE_KEY_TYPES)}")
        if self.template_subject is not None:
            from swcmp.names import parse_dn

            parse_dn(self.template_subject)
        if self.template_unknown and (self.template_key_types or self.template_subject):
            raise ConfigError("a CA that does not know certReqTemplate serves no template")
        if self.max_request_size < 1024:
            raise ConfigError("the request size limit must be at least 1024 bytes")
