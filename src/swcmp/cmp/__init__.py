"""swcmp's CMP library (RFC 4210, RFC 9480, RFC 9483, RFC 6712).

It imports nothing from swcmp outside this package. The public API is importable
from here; the names load lazily (PEP 562), so that importing one light module such
as :mod:`swcmp.cmp.errors` does not pull in pyasn1 and the HTTP stack.

    from swcmp.cmp import CMPClient, HttpTransport, MacProtection
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from swcmp.cmp.choices import KEY_TYPES, MAC_ALGS

if TYPE_CHECKING:
    from swcmp.cmp.client import CMPClient, Enrollment, TxEvent
    from swcmp.cmp.errors import (
        CertificateError,
        CertificateRejectedError,
        CMPErrorResponse,
        ConfigError,
        PollingTimeoutError,
        ProtectionError,
        ProtocolError,
        SwcmpError,
        TransportError,
    )
    from swcmp.cmp.messages import (
        AlgorithmId,
        CertRepContent,
        CertResponse,
        PKIMessageInfo,
        RootCaKeyUpdate,
        StatusInfo,
    )
    from swcmp.cmp.protection import (
        MacProtection,
        Protection,
        ResponseTrust,
        SignatureProtection,
    )
    from swcmp.cmp.transport import HttpTransport, Transport


_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("CMPClient", "Enrollment", "TxEvent"), "client"),
    **dict.fromkeys(
        ("CertificateError", "CertificateRejectedError", "CMPErrorResponse", "ConfigError",
         "PollingTimeoutError", "ProtectionError", "ProtocolError", "SwcmpError",
         "TransportError"), "errors"),
    **dict.fromkeys(
        ("AlgorithmId", "CertRepContent", "CertResponse", "PKIMessageInfo", "RootCaKeyUpdate",
         "StatusInfo"),
        "messages"),
    **dict.fromkeys(
        ("MacProtection", "Protection", "ResponseTrust", "SignatureProtection"), "protection"),
    **dict.fromkeys(("HttpTransport", "Transport"), "transport"),
}

__all__ = [
    "KEY_TYPES",
    "MAC_ALGS",
    "AlgorithmId",
    "CMPClient",
    "CMPErrorResponse",
    "CertRepContent",
    "CertResponse",
    "CertificateError",
    "CertificateRejectedError",
    "ConfigError",
    "Enrollment",
    "HttpTransport",
    "MacProtection",
    "PKIMessageInfo",
    "PollingTimeoutError",
    "Protection",
    "ProtectionError",
    "ProtocolError",
    "ResponseTrust",
    "RootCaKeyUpdate",
    "SignatureProtection",
    "StatusInfo",
    "SwcmpError",
    "Transport",
    "TransportError",
    "TxEvent",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'swcmp.cmp' has no attribute {name!r}")
    return getattr(importlib.import_module(f"swcmp.cmp.{module}"), name)
