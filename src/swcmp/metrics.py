"""Prometheus metrics in the text exposition format, for node_exporter's textfile collector.

Names follow Prometheus' conventions: the unit is in the name
(``_timestamp_seconds`` for points in time as Unix seconds), counters end in
``_total`` and never go down, 0/1 gauges say what 1 means. ``swcmp renew``,
``swcmp serve`` and the ``swcmp request`` commands write the file atomically
(temporary file, rename) after each pass or request, and ``serve`` refreshes it
every :data:`REFRESH` seconds, so that node_exporter never reads half a file.
The families, with their labels:

per session (``session``):
    ``swcmp_certificate_not_before_timestamp_seconds``,
    ``swcmp_certificate_not_after_timestamp_seconds``: the current certificate;
    ``swcmp_next_renewal_timestamp_seconds``: when it is due;
    ``swcmp_last_success_timestamp_seconds``: the last successful certificate
    request or renewal (IR, CR, KUR);
    ``swcmp_last_result_success``: 1 if the last of those succeeded;
    ``swcmp_last_operation_success{operation="ca"|"manual"}``: the same for the
    other operations, kept apart so that a failed CA question (``ca``: CA
    certificates, root update, CRL) or a mistyped revocation (``manual``) never
    turns a healthy renewal's series to 0;
    ``swcmp_renewals_total{result="success"|"failure"}``;
    ``swcmp_renewal_failures_total{error, fail_info}``: failures by kind and
    the CA's failInfo names (``error="ca_refused"``) or ``fail_info=""``;
    ``swcmp_consecutive_failures``; ``swcmp_auto_update_enabled``;
    ``swcmp_session_state{state}``: 1 for the current state, 0 for the others;
    ``swcmp_session_readable``: 1, or 0 for a session whose file swcmp cannot read
    (its only series then);
    ``swcmp_renewal_journal_damaged``: 1 when the session's renewal journal cannot
    be read (no renewal runs until it is inspected and removed), else 0;
    ``swcmp_ca_certificate_not_after_timestamp_seconds{subject, serial}``:
    the trust anchors and CA certificates that came with the certificate;
    ``swcmp_charon_certificate_current``: 1 if charon holds the certificate
    that is on disk together with its key, 0 if not (serial drift after a
    manual ``swanctl --load-creds``, a lost hook or a files-only renewal);
    ``swcmp_charon_stale_certificates``: other certificates of the same
    subject charon holds a key for;
    ``swcmp_ca_life_consecutive_failures{question}``: how many times in a row
    the CA failed a CA-life question (``caCerts``, ``rootCaCert``,
    ``currentCRL``, and any other question that failed), 0 when it answered;
    ``swcmp_ca_life_next_try_timestamp_seconds{question}``: when a failing
    question is asked again (its persisted backoff), 0 when it is not failing;
host-wide: ``swcmp_metrics_written_timestamp_seconds`` (when the file was written:
a file that stays old says serve stopped, the renewal timer no longer runs, or the
file cannot be written, a full disk), ``swcmp_charon_up`` (charon answered over VICI;
only when swcmp talks to charon), ``swcmp_ha_standby``, ``swcmp_ha_role_source_ok`` and
``swcmp_ha_role_info{role}`` (only with an HA role source).

The alerts in ``contrib/prometheus/swcmp-rules.yml`` are written against
these names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509

from swcmp.calife.state import CA_CERTS, CURRENT_CRL, ROOT_UPDATE
from swcmp.cmp import certs
from swcmp.errors import (
    CertificateError,
    CMPErrorResponse,
    ConfigError,
    PollingTimeoutError,
    ProtectionError,
    ProtocolError,
    StorageError,
    SwcmpError,
    TransportError,
)
from swcmp.ha import Role
from swcmp.paths import Paths
from swcmp.session import Session
from swcmp.state import STATES, SessionState

__all__ = ["CA_LIFE_QUESTIONS", "REFRESH", "CharonView", "SessionView", "ca_certificates",
           "failure_key", "render"]

#: The CA-life questions whose failure series are written for every session (0 when
#: healthy); others appear once they fail.
CA_LIFE_QUESTIONS = (CA_CERTS, ROOT_UPDATE, CURRENT_CRL)

#: How often ``swcmp serve`` rewrites the metrics while nothing else happens (seconds).
REFRESH = 60.0


def failure_key(e: BaseException) -> str:
    """The ``error:fail_info`` key under which a failed renewal is counted.

    ``error`` is a small fixed vocabulary (ca_refused, transport, protocol,
    protection, polling_timeout, abandoned, certificate, charon, needs_ir, storage,
    config, other); ``fail_info`` the CA's failInfo names, comma-separated.
    ``abandoned``: a CA transaction waited past the session's poll_limit.
    """
    from swcmp.deploy import DeployError
    from swcmp.errors import NeedsInitialRequest, TransactionAbandoned

    kinds: Sequence[tuple[type[BaseException], str]] = (
        (NeedsInitialRequest, "needs_ir"),
        (TransactionAbandoned, "abandoned"),
        (CMPErrorResponse, "ca_refused"),
        (PollingTimeoutError, "polling_timeout"),
        (ProtectionError, "protection"),
        (ProtocolError, "protocol"),
        (TransportError, "transport"),
        (DeployError, "charon"),
        (CertificateError, "certificate"),
        (StorageError, "storage"),
        (ConfigError, "config"),
    )
    kind = next((k for cls, k in kinds if isinstance(e, cls)), "other")
    if not isinstance(e, SwcmpError):
        kind = "other"
    fail_info = ",".join(e.fail_info) if isinstance(e, CMPErrorResponse) else ""
    return f"{kind}:{fail_info}"


@dataclass(frozen=True)
class SessionView:
    """What the metrics of one session are made of (read once per pass)."""

    session: Session
    cert: x509.Certificate | None
    state: SessionState
    state_name: str
    renew_at_ts: float | None
    ca_certs: Sequence[x509.Certificate] = ()
    #: per CA-life question that failed: (consecutive failures, next try as Unix time)
    ca_life_failures: Mapping[str, tuple[int, float | None]] = field(default_factory=dict)
    #: the renewal journal cannot be read (no renewal can run until it is removed)
    journal_damaged: bool = False


@dataclass(frozen=True)
class CharonView:
    """What charon holds: ``(subject RFC 4514, serial)`` of certificates it has a key for.

    ``up`` False means charon did not answer (then nothing else is known).
    """

    up: bool
    with_key: frozenset[tuple[str, int]] = field(default_factory=frozenset)


def ca_certificates(session: Session, paths: Paths) -> list[x509.Certificate]:
    """The session's trust anchors and the CA certificates stored with its certificate."""
    found: dict[tuple[bytes, int], x509.Certificate] = {}
    for path in (*session.trust, *paths.ca_cert_files(session.name)):
        try:
            loaded = certs.load_certificates(path.read_bytes())
        except (OSError, SwcmpError):
            continue  # session check reports unreadable trust anchors
        for c in loaded:
            found.setdefault((c.subject.public_bytes(), c.serial_number), c)
    return list(found.values())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Exposition:
    """Collects samples per family and prints HELP and TYPE once per family."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, list[str]]] = {}

    def family(self, name: str, kind: str, help_text: str) -> None:
        self._families.setdefault(name, (kind, help_text, []))

    def sample(self, name: str, labels: Mapping[str, str], value: float) -> None:
        body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        number = repr(float(value)) if not float(value).is_integer() else str(int(value))
        self._families[name][2].append(f"{name}{{{body}}} {number}" if body
                                       else f"{name} {number}")

    def text(self) -> str:
        lines: list[str] = []
        for name, (kind, help_text, samples) in self._families.items():
            if not samples:
                continue
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
        return "\n".join(lines) + "\n" if lines else ""


_FAMILIES = (
    ("swcmp_certificate_not_before_timestamp_seconds", "gauge",
     "Start of the current certificate's validity (Unix time)."),
    ("swcmp_certificate_not_after_timestamp_seconds", "gauge",
     "End of the current certificate's validity (Unix time)."),
    ("swcmp_next_renewal_timestamp_seconds", "gauge",
     "When the current certificate is due for renewal (Unix time)."),
    ("swcmp_last_success_timestamp_seconds", "gauge",
     "When the last request or renewal succeeded (Unix time)."),
    ("swcmp_last_result_success", "gauge",
     "1 if the last certificate request or renewal (IR, CR, KUR) succeeded."),
    ("swcmp_last_operation_success", "gauge",
     "1 if the last operation of this kind succeeded: ca (questions to the CA: CA "
     "certificates, root update, CRL) or manual (revocations)."),
    ("swcmp_renewals_total", "counter", "Renewals attempted, by result."),
    ("swcmp_renewal_failures_total", "counter",
     "Failed renewals by kind of error and the CA's failInfo names."),
    ("swcmp_consecutive_failures", "gauge", "Failed renewals since the last success."),
    ("swcmp_auto_update_enabled", "gauge", "1 if auto-update is on for the session."),
    ("swcmp_session_state", "gauge", "1 for the session's current state, 0 for the others."),
    ("swcmp_session_readable", "gauge",
     "1 if swcmp could read the session's files; 0 for a broken session file (the "
     "session renews nothing until it is fixed)."),
    ("swcmp_renewal_journal_damaged", "gauge",
     "1 if the session's renewal journal cannot be read: no renewal runs until it is "
     "inspected and removed."),
    ("swcmp_ca_certificate_not_after_timestamp_seconds", "gauge",
     "End of validity of a CA certificate the session relies on (Unix time)."),
    ("swcmp_ca_life_consecutive_failures", "gauge",
     "CA-life questions (CA certificates, root update, CRL) the CA failed in a row; "
     "0 when it answered."),
    ("swcmp_ca_life_next_try_timestamp_seconds", "gauge",
     "When a failing CA-life question is asked again (Unix time); 0 when it is not "
     "failing."),
    ("swcmp_metrics_written_timestamp_seconds", "gauge",
     "When swcmp wrote this file (serve: every pass; the renewal timer: twice a day)."),
    ("swcmp_charon_up", "gauge", "1 if charon answered over VICI."),
    ("swcmp_charon_certificate_current", "gauge",
     "1 if charon holds the certificate on disk with its private key."),
    ("swcmp_charon_stale_certificates", "gauge",
     "Other certificates with the session's subject that charon holds a key for."),
    ("swcmp_ha_standby", "gauge", "1 if this node acts as HA standby (requests nothing)."),
    ("swcmp_ha_role_source_ok", "gauge",
     "1 if the HA role source could be read and named a known role."),
    ("swcmp_ha_role_info", "gauge", "The HA role the role source names (value always 1)."),
)


def render(views: Iterable[SessionView], *, role: Role | None = None,
           charon: CharonView | None = None, unreadable: Sequence[str] = (),
           written: datetime | None = None) -> str:
    """The metrics text for ``views``; ``charon`` None when swcmp does not talk to charon;
    ``written``: the time of writing (``swcmp_metrics_written_timestamp_seconds``).

    ``unreadable``: sessions whose files swcmp could not read (a broken session file):
    their other series are missing, ``swcmp_session_readable`` 0 stays.
    """
    views = list(views)
    out = _Exposition()
    for name, kind, help_text in _FAMILIES:
        out.family(name, kind, help_text)
    if written is not None:
        out.sample("swcmp_metrics_written_timestamp_seconds", {}, int(written.timestamp()))
    if charon is not None:
        out.sample("swcmp_charon_up", {}, int(charon.up))
    if role is not None and role.configured:
        out.sample("swcmp_ha_standby", {}, int(role.standby))
        out.sample("swcmp_ha_role_source_ok", {}, int(not role.problem))
        out.sample("swcmp_ha_role_info", {"role": role.role or "unknown"}, 1)
    for v in views:
        s = {"session": str(v.session.name)}
        st = v.state
        if v.cert is not None:
            out.sample("swcmp_certificate_not_before_timestamp_seconds", s,
                       int(v.cert.not_valid_before_utc.timestamp()))
            out.sample("swcmp_certificate_not_after_timestamp_seconds", s,
                       int(v.cert.not_valid_after_utc.timestamp()))
        if v.renew_at_ts is not None:
            out.sample("swcmp_next_renewal_timestamp_seconds", s, int(v.renew_at_ts))
        success_ts = _timestamp(st.last_success)
        if success_ts is not None:
            out.sample("swcmp_last_success_timestamp_seconds", s, int(success_ts))
        if st.last_result is not None:
            out.sample("swcmp_last_result_success", s, int(st.last_result.ok))
        for kind, other in sorted(st.other_results.items()):
            out.sample("swcmp_last_operation_success", s | {"operation": kind}, int(other.ok))
        for result in ("success", "failure"):
            out.sample("swcmp_renewals_total", s | {"result": result},
                       st.renewals.get(result, 0))
        for key, n in sorted(st.renewal_failures.items()):
            error, _, fail_info = key.partition(":")
            out.sample("swcmp_renewal_failures_total",
                       s | {"error": error, "fail_info": fail_info}, n)
        out.sample("swcmp_consecutive_failures", s, st.failures)
        out.sample("swcmp_auto_update_enabled", s, int(v.session.auto_update))
        for state in STATES:
            out.sample("swcmp_session_state", s | {"state": state}, int(state == v.state_name))
        out.sample("swcmp_session_readable", s, 1)
        out.sample("swcmp_renewal_journal_damaged", s, int(v.journal_damaged))
        for ca in v.ca_certs:
            out.sample("swcmp_ca_certificate_not_after_timestamp_seconds",
                       s | {"subject": ca.subject.rfc4514_string(),
                            "serial": f"{ca.serial_number:x}"},
                       int(ca.not_valid_after_utc.timestamp()))
        failing = dict(v.ca_life_failures)
        for question in sorted(set(CA_LIFE_QUESTIONS) | set(failing)):
            n, next_try = failing.get(question, (0, None))
            q = s | {"question": question}
            out.sample("swcmp_ca_life_consecutive_failures", q, n)
            out.sample("swcmp_ca_life_next_try_timestamp_seconds", q,
                       int(next_try) if n and next_try is not None else 0)
        if charon is not None and charon.up and v.cert is not None:
            subject = v.cert.subject.rfc4514_string()
            current = (subject, v.cert.serial_number) in charon.with_key
            others = sum(1 for subj, serial in charon.with_key
                         if subj == subject and serial != v.cert.serial_number)
            out.sample("swcmp_charon_certificate_current", s, int(current))
            out.sample("swcmp_charon_stale_certificates", s, others)
    for name in unreadable:
        out.sample("swcmp_session_readable", {"session": name}, 0)
    return out.text()


def _timestamp(iso: str | None) -> float | None:
    if iso is None:
        return None
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None
