"""The CA's certificate request template (genm certReqTemplate, RFC 9483 4.3.3): asked
before an IR and before a key update that makes a new key, so that a key type or subject
the CA does not take is refused before anything is sent, with the setting to change.

A CA that does not know the question (its genp has no certReqTemplate, or it answers
with an error it protected, or HTTP 404 or 405 at the question's URL, and then takes the
request) is remembered in ``calife.json`` like a CA without crlStatusList, and not asked
again for UNSUPPORTED_RETRY. Such an error says it does not know the question only when
the same CA takes the request that follows: a CA that refuses every message (our signer
no longer trusted, its clock, its database down) refuses the question first, and is
asked again next time. A CA that cannot be reached (no connection, no answer within the
session's timeout) fails the request there, as the request itself would. Whatever else
goes wrong with the question (an HTTP error, an answer that fails its checks or comes
delayed, a template swcmp cannot read) is logged and the request goes on: the template
only ever spares the CA a request it would refuse.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import datetime
from typing import TYPE_CHECKING

from cryptography import x509

from swcmp.calife.state import CERT_REQ_TEMPLATE, CaLifeStore, _iso
from swcmp.errors import (
    CMPErrorResponse,
    ConfigError,
    ConnectError,
    HTTPStatusError,
    SwcmpError,
    TimeoutError_,
)
from swcmp.paths import Paths
from swcmp.session import Session

if TYPE_CHECKING:
    from swcmp.cmp.client import CMPClient
    from swcmp.cmp.protection import Protection
    from swcmp.cmp.template import CertReqTemplate, KeyChoice

log = logging.getLogger(__name__)

#: Seconds a CA that delays its answer to the template question (RFC 9483 4.4) is polled:
#: none, the request goes on without the template. So the question costs one exchange at
#: most, and a renewal attempt stays within policy.attempt_bound (the question is asked
#: only when a new key is made, never in a run that confirms a certificate late).
TEMPLATE_POLL_DEADLINE = 0.0


def ask_template(session: Session, paths: Paths, client: CMPClient, protection: Protection,
                 *, now: datetime, force: bool = False,
                 refusals: list[SwcmpError] | None = None) -> CertReqTemplate | None:
    """Ask the CA for its template and remember whether it knows the question.

    Returns the template, or None when the CA does not know the question (then
    remembered) or, unless ``force``, was remembered as not knowing it. With
    ``refusals``, a protected error to the question, or HTTP 404 or 405 at its URL (a
    CA routing by path that does not offer it), is put there instead of remembered (the
    caller remembers it, with :func:`remember_refusal`, once the CA took the request
    that follows). Other failures raise (SwcmpError).
    """
    store = CaLifeStore(paths, session.name)
    if not force and store.load().is_unsupported(CERT_REQ_TEMPLATE, now):
        log.debug("%s: the CA does not know certReqTemplate (remembered); not asked",
                  session.name)
        return None
    deadline = client.poll_deadline
    client.poll_deadline = min(deadline, TEMPLATE_POLL_DEADLINE)
    try:
        answer = client.cert_req_template(protection=protection)
    except CMPErrorResponse as e:
        if e.refuses_message:  # our clock, our signer, the CA down: not about it
            raise
        if e.protected and refusals is not None:
            refusals.append(e)
            log.info("%s: the CA refuses genm certReqTemplate (%s); remembered if it takes "
                     "the request", session.name, e)
            return None
        if e.protected:  # the CA itself refuses the question: not asked again each time
            remember_refusal(session, paths, e, now=now)
            return None
        raise
    except HTTPStatusError as e:
        if refusals is not None and e.status in (404, 405):
            refusals.append(e)
            log.info("%s: the CA does not serve genm certReqTemplate at its URL (%s); "
                     "remembered if it takes the request", session.name, e)
            return None
        raise
    finally:
        client.poll_deadline = deadline
    with store.update() as st:
        if answer is None:
            st.unsupported[CERT_REQ_TEMPLATE] = {
                "since": _iso(now), "error": "the CA's genp has no certReqTemplate"}
        else:
            st.unsupported.pop(CERT_REQ_TEMPLATE, None)
            st.checked[CERT_REQ_TEMPLATE] = _iso(now)
    if answer is None:
        log.info("%s: the CA does not answer genm certReqTemplate; remembered, not asked "
                 "again", session.name)
    return answer


def remember_refusal(session: Session, paths: Paths, error: SwcmpError, *,
                     now: datetime) -> None:
    """Remember that the CA refused the template question (``error``: its protected
    error, or HTTP 404 or 405 at the question's URL)."""
    with CaLifeStore(paths, session.name).update() as st:
        st.unsupported[CERT_REQ_TEMPLATE] = {"since": _iso(now), "error": str(error)[:300]}
    log.info("%s: the CA refuses genm certReqTemplate (%s); remembered, not asked again",
             session.name, error)


def _nothing() -> None:
    return None


def check_request(session: Session, paths: Paths, client: CMPClient, protection: Protection,
                  *, now: datetime, key: KeyChoice, key_is_new: bool,
                  subject: x509.Name | None, what: str,
                  makeable: Collection[str] | None = None) -> Callable[[], None]:
    """Ask the template (unless the CA is known not to have the question) and refuse a
    request it forbids, before anything else is sent.

    ``key`` is the type of the key to be certified, ``key_is_new`` whether it is still to
    be made per the session's key type; ``subject`` the one requested (None: not
    checked, as for a key update, which repeats the certificate's). ``what`` names the
    request in messages ("initial request", "key update"); ``makeable`` the key types the
    session's key store can make (what the hint may suggest; None: any of swcmp's).

    Returns what to call once the CA took the request: it remembers a protected refusal
    of the question (a CA that refused both said nothing about the question).

    Raises:
        ConfigError: the template forbids the key type or the subject; nothing was sent
            but the genm.
    """
    from swcmp.cmp import template

    if not session.ask_template:
        log.debug("%s: the template is not asked (ask_template off)", session.name)
        return _nothing
    refusals: list[SwcmpError] = []
    try:
        tmpl = ask_template(session, paths, client, protection, now=now, refusals=refusals)
    except (ConnectError, TimeoutError_):
        raise  # the CA cannot be reached now: the request would fare no better
    except SwcmpError as e:
        log.warning("%s: the CA's certificate request template could not be had (%s); the "
                    "%s goes on without it", session.name, e, what)
        return _nothing
    if refusals:
        refused = refusals[0]

        def taken() -> None:
            try:
                remember_refusal(session, paths, refused, now=now)
            except SwcmpError as e:  # never fails the request the CA took
                log.warning("%s: could not remember the CA's refusal of certReqTemplate: "
                            "%s", session.name, e)

        return taken
    if tmpl is None or not tmpl.offered:
        return _nothing
    for item in tmpl.unreadable:
        log.warning("%s: the CA's certificate request template has what swcmp cannot read "
                    "(%s); not checked", session.name, item)
    problems = template.check(tmpl, key=key, subject=subject)
    if not problems:
        log.info("%s: the %s fits the CA's certificate request template", session.name, what)
        return _nothing
    first = problems[0]
    text = template.describe_problems(problems)
    message = f"session {session.name}: {text}; the {what} was not sent"
    if first.what == "key" and key_is_new:
        suggested = tmpl.suggested_key_type(makeable)
        raise ConfigError(message).with_hint(
            f"choose a key type the CA allows: `swcmp session set {session.name} --key-type "
            f"{suggested or 'TYPE'}`" + ("" if suggested else " (none of swcmp's key types "
                                         "is among them: ask the CA operator)"))
    if first.what == "key":
        suggested = tmpl.suggested_key_type(makeable)
        raise ConfigError(message).with_hint(
            "the session's existing key is of a type the CA does not take: give the session "
            f"a new key name so that one of an allowed type is made, e.g. `swcmp session set "
            f"{session.name} --key NEWNAME --key-type {suggested or 'TYPE'}`")
    raise ConfigError(message).with_hint(
        f"give the session the subject the CA wants: `swcmp session set {session.name} "
        "--entity DN`, or ask the CA operator")


def key_of_session(session: Session) -> KeyChoice:
    """The key type a new key of the session would have."""
    from swcmp.cmp import template

    return template.key_choice(session.key_type)


def key_of(public_key: object) -> KeyChoice:
    from swcmp.cmp import template

    return template.key_choice_of(public_key)


__all__ = ["ask_template", "check_request", "key_of", "key_of_session", "remember_refusal"]
