#!/usr/bin/python
# Copyright: swcmp contributors
# MIT License (see the repository's pyproject.toml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: swcmp_request
short_description: The one-off CMP requests of a swcmp session (initial enrolment, revocation)
description:
  - V(initial) sends an initial request (IR) with C(swcmp request initial) when the session
    has no usable certificate yet (none, unreadable, expired or revoked), so that a play
    can enrol new gateways and leave enrolled ones alone. Renewals afterwards are
    swcmp's own (auto-update, see M(swcmp.gateway.swcmp_session)).
  - V(revoke) revokes the session's current certificate (or O(serial)) with
    C(swcmp request revoke), unless swcmp has already revoked that serial.
  - Uses the installed C(swcmp) with C(--json) and returns the session's status as facts.
version_added: "0.1.0"
author: swcmp contributors (!UNKNOWN)
options:
  name:
    description: The session's name.
    type: str
    required: true
  request:
    description: Which request.
    type: str
    choices: [initial, revoke]
    default: initial
  force:
    description: With V(initial), enrol even when the session has a valid certificate.
    type: bool
    default: false
  deploy:
    description: Load the new key and certificate into charon (C(--no-deploy) when false).
    type: bool
    default: true
  reason:
    description: With V(revoke), the CRL reason by its RFC 5280 name (C(unspecified), C(keyCompromise), C(superseded), C(cessationOfOperation)...).
    type: str
    default: unspecified
  serial:
    description: With V(revoke), the serial (hex) of a certificate other than the current one.
    type: str
  executable:
    description: The swcmp command (a name looked up in PATH, or a path).
    type: str
    default: swcmp
  config_dir:
    description: swcmp's C(--config-dir) (default C(/etc/swcmp)).
    type: path
  state_dir:
    description: swcmp's C(--state-dir) (default C(/var/lib/swcmp)).
    type: path
  swanctl_dir:
    description: swcmp's C(--swanctl-dir) (default C(/etc/swanctl)).
    type: path
  vici:
    description: swcmp's C(--vici) URI, C(none) on hosts without charon.
    type: str
attributes:
  check_mode:
    support: full
    description: Says whether it would send the request and sends nothing.
  diff_mode:
    support: none
    description: A request has nothing to show as a diff; the result says what was sent.
notes:
  - The session's settings (CA, MAC reference and secret file) come from M(swcmp.gateway.swcmp_session).
"""

EXAMPLES = r"""
- name: Enrol gateways that have no certificate yet
  swcmp.gateway.swcmp_request:
    name: gw
    request: initial

- name: Revoke the current certificate (key compromised)
  swcmp.gateway.swcmp_request:
    name: gw
    request: revoke
    reason: keyCompromise
"""

RETURN = r"""
result:
  description: swcmp's JSON answer to the request (C(serial), C(not_after), C(cert_path), C(charon)... for V(initial); C(message), C(files) for V(revoke)).
  returned: when a request was sent
  type: dict
status:
  description: The session's entry of C(swcmp status --json) after the request.
  returned: always
  type: dict
ansible_facts:
  description: Facts.
  returned: always
  type: complex
  contains:
    swcmp_status:
      description: Every session's C(swcmp status --json) entry on the host, by session name.
      type: dict
      returned: always
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.swcmp.gateway.plugins.module_utils.swcmp_cli import (
    COMMON_ARGS,
    Swcmp,
    SwcmpError,
    needs_initial,
)


def _already_revoked(entry, serial):
    if entry is None:
        return False
    if serial is None:
        cert = entry.get("certificate") or {}
        serial = cert.get("serial")
        if serial is None:
            return False
    serial = serial.lower().lstrip("0") or "0"
    revoked = ((entry.get("ca") or {}).get("revoked")) or []
    return any((str(r.get("serial", "")).lower().lstrip("0") or "0") == serial for r in revoked)


def main():
    spec = dict(
        name=dict(type="str", required=True),
        request=dict(type="str", choices=["initial", "revoke"], default="initial"),
        force=dict(type="bool", default=False),
        deploy=dict(type="bool", default=True),
        reason=dict(type="str", default="unspecified"),
        serial=dict(type="str"),
    )
    spec.update(COMMON_ARGS)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    name = p["name"]
    swcmp = Swcmp(module)
    result = dict(changed=False)
    try:
        facts = swcmp.status()
        entry = facts.get(name)
        if entry is None and module.check_mode and p["request"] == "initial":
            # a check run of a play that creates the session in an earlier task
            module.exit_json(changed=True, status=None, ansible_facts=dict(swcmp_status=facts),
                             msg="no session %s yet: it would be enrolled once created" % name)
        if entry is None:
            swcmp.run("session", "show", name)  # fails with swcmp's "no session named ..."
        if p["request"] == "initial":
            due = p["force"] or needs_initial(entry)
            # --yes: the play is the confirmation (swcmp asks before replacing a valid
            # certificate or revoking the live one, and refuses without a terminal)
            args = ["request", "initial", name, "--yes"] + (
                [] if p["deploy"] else ["--no-deploy"])
        else:
            due = not _already_revoked(entry, p["serial"])
            args = ["request", "revoke", name, "--reason", p["reason"], "--yes"]
            if p["serial"]:
                args += ["--serial", p["serial"]]
        if due:
            result["changed"] = True
            if not module.check_mode:
                result["result"] = swcmp.run(*args)
                facts = swcmp.status()
        result["status"] = facts.get(name)
        result["ansible_facts"] = dict(swcmp_status=facts)
    except SwcmpError as e:
        module.fail_json(**dict(result, **e.fail_args()))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
