"""The CMP library's exceptions: one root, subclasses that carry their data as attributes.

Every message says what failed, why, and what to do about it. No exception
ever carries a secret (MAC secret, private key) in its text or attributes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Self

from swcmp.cmp.text import safe

# PKIFailureInfo bits (RFC 4210 section 5.2.3, RFC 9480) with a hint for the user.
FAILURE_INFO: dict[int, tuple[str, str]] = {
    0: ("badAlg", "the CA does not accept the algorithm used; check the MAC "
        "algorithm and the key type"),
    1: ("badMessageCheck", "protection check failed at the CA: wrong MAC secret or reference, "
        "or a signing certificate the CA does not accept"),
    2: ("badRequest", "the CA does not accept this kind of request"),
    3: ("badTime", "messageTime too far from the CA's clock: check NTP on this host"),
    4: ("badCertId", "the CA does not know the certificate named in the request"),
    5: ("badDataFormat", "the CA could not parse the request"),
    6: ("wrongAuthority", "the request went to the wrong CA: check the CA name "
        "and the server URL"),
    7: ("incorrectData", "the request's data is not what the CA expected"),
    8: ("missingTimeStamp", "the CA requires a messageTime"),
    9: ("badPOP", "proof of possession of the private key failed"),
    10: ("certRevoked", "the certificate is revoked: a new initial request (IR) is needed"),
    11: ("certConfirmed", "the certificate was already confirmed"),
    12: ("wrongIntegrity", "the CA wants the other kind of protection (MAC or signature)"),
    13: ("badRecipientNonce", "recipNonce mismatch"),
    14: ("timeNotAvailable", "the CA's time source is not available"),
    15: ("unacceptedPolicy", "the CA does not accept the requested policy"),
    16: ("unacceptedExtension", "the CA does not accept a requested extension (e.g. a SAN)"),
    17: ("addInfoNotAvailable", "the CA lacks information it needs"),
    18: ("badSenderNonce", "senderNonce missing or wrong"),
    19: ("badCertTemplate", "the CA refused the requested subject, SANs or key"),
    20: ("signerNotTrusted", "the CA does not trust the certificate that signed the request"),
    21: ("transactionIdInUse", "transactionID already in use: retry"),
    22: ("unsupportedVersion", "the CA does not support this CMP version"),
    23: ("notAuthorized", "this entity is not authorized for the request"),
    24: ("systemUnavail", "the CA is temporarily unavailable: retry later"),
    25: ("systemFailure", "the CA had an internal failure: retry later or ask its operator"),
    26: ("duplicateCertReq", "the CA refuses a duplicate certificate request"),
}
FAILURE_BIT: dict[str, int] = {name: bit for bit, (name, _) in FAILURE_INFO.items()}
#: failInfo names that refuse a message for how it came, not for what it asks: its
#: protection, time, nonces, recipient or signer, or the CA's own state. A question the
#: CA refuses with one of these may well be one it knows (asked again after a backoff).
MESSAGE_FAILURES = frozenset({
    "badAlg", "badMessageCheck", "badTime", "wrongAuthority", "missingTimeStamp",
    "wrongIntegrity", "badRecipientNonce", "timeNotAvailable", "badSenderNonce",
    "signerNotTrusted", "transactionIdInUse", "unsupportedVersion", "notAuthorized",
    "systemUnavail", "systemFailure"})

PKI_STATUS: dict[int, str] = {
    0: "accepted",
    1: "grantedWithMods",
    2: "rejection",
    3: "waiting",
    4: "revocationWarning",
    5: "revocationNotification",
    6: "keyUpdateWarning",
}


class SwcmpError(Exception):
    """Root of every error swcmp raises on purpose.

    ``hint`` says what to do in the library's own words; ``setting`` names the
    parameter that addresses it (``trust``, ``server_cert``, ``server_url``, ...), as
    data, so that an application can name its own command or option for it.
    """

    hint: str = ""
    setting: str = ""

    def with_hint(self, hint: str, *, setting: str = "") -> Self:
        """Attach what the user should do; returns self for ``raise E(...).with_hint(...)``."""
        self.hint = hint
        if setting:
            self.setting = setting
        return self

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} ({self.hint})" if self.hint else base


class ConfigError(SwcmpError):
    """A configuration value is missing or wrong."""


class ProtocolError(SwcmpError):
    """A CMP message is malformed, unexpected or not what this transaction needs."""


class ProtectionError(ProtocolError):
    """A message's MAC or signature is missing, wrong, or made by an untrusted party."""


class CertificateError(SwcmpError):
    """A certificate fails our checks (wrong key, no chain, expired, wrong subject)."""


class NoChainError(CertificateError):
    """A certificate does not chain to the trust anchors (the CA's root may have rolled
    over since the anchors were last updated)."""


class TransportError(SwcmpError):
    """Moving bytes to or from the CA failed."""

    def __init__(self, message: str, *, url: str, hint: str = "", setting: str = "") -> None:
        super().__init__(message)
        self.url = url
        if hint:
            self.hint = hint
        if setting:
            self.setting = setting


class ConnectError(TransportError):
    """The CA could not be reached (refused, no route, DNS, TLS)."""


class TimeoutError_(TransportError):
    """The CA did not answer in time."""


class HTTPStatusError(TransportError):
    """The CA answered with an HTTP status other than 200."""

    def __init__(
        self, message: str, *, url: str, status: int, hint: str = "", setting: str = ""
    ) -> None:
        super().__init__(message, url=url, hint=hint, setting=setting)
        self.status = status
        #: A CMP message that came with the error status, if any (RFC 6712 allows it).
        self.body: bytes | None = None
        #: Seconds the server asked us to wait (Retry-After of a 503 or 429), clamped.
        self.retry_after: float | None = None


class ContentTypeError(TransportError):
    """The CA answered with something that is not application/pkixcmp."""


class ResponseTooLargeError(TransportError):
    """The CA's answer exceeds the size limit."""


def failure_names(bits: Iterable[int]) -> tuple[str, ...]:
    """Names of PKIFailureInfo bits, unknown ones as ``bitN``."""
    return tuple(FAILURE_INFO[b][0] if b in FAILURE_INFO else f"bit{b}" for b in sorted(bits))


class CMPErrorResponse(ProtocolError):
    """The CA refused: PKIStatus rejection (in a response or an error message).

    Attributes carry what the CA said: ``status`` (name), ``fail_info`` (names),
    ``text`` (the CA's free text), ``error_code`` when an error message gave one,
    and ``protected`` (False when the CA's message was unprotected and so cannot
    be trusted to be from the CA at all).
    """

    def __init__(
        self,
        *,
        status: str,
        fail_info: tuple[str, ...] = (),
        text: tuple[str, ...] = (),
        error_code: int | None = None,
        protected: bool = True,
        context: str = "request",
    ) -> None:
        self.status = status
        self.fail_info = fail_info
        self.text = text
        self.error_code = error_code
        self.protected = protected
        self.context = context
        # The CA's words go to terminals and logs: control characters escaped (and the
        # whole bounded), so that no escape sequence reaches the operator's screen.
        parts = [f"CA rejected the {context}: status {safe(status)}"]
        if fail_info:
            parts.append("failInfo " + ", ".join(safe(n) for n in fail_info))
        if text:
            said = safe(" / ".join(text))
            parts.append("CA says: " + (said if len(said) <= 1000 else said[:1000] + "..."))
        if error_code is not None:
            parts.append(f"errorCode {error_code}")
        if not protected:
            parts.append("cannot be attributed to the CA: unprotected, or not an answer to "
                         "this request")
        super().__init__("; ".join(parts))
        hints = [FAILURE_INFO[FAILURE_BIT[n]][1] for n in fail_info if n in FAILURE_BIT]
        self.hint = "; ".join(hints)

    @property
    def refuses_message(self) -> bool:
        """The failInfo refuses the message itself (see :data:`MESSAGE_FAILURES`), not
        what it asks: a CA that says so about a genm has not said it does not know it."""
        return any(n in MESSAGE_FAILURES for n in self.fail_info)


class PollingTimeoutError(ProtocolError):
    """The CA kept answering 'waiting' past our deadline."""


class CertificateRejectedError(CertificateError):
    """We refused the issued certificate and told the CA so in certConf."""
