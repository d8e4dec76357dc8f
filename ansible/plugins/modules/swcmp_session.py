#!/usr/bin/python
# Copyright: swcmp contributors
# MIT License (see the repository's pyproject.toml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: swcmp_session
short_description: Make a swcmp CMP session match a declaration
description:
  - Creates, changes or deletes a session of swcmp (CMPv2 certificate renewal for
    strongSwan) with the installed C(swcmp) command and its C(--json) output, and switches
    its auto-update on or off.
  - Only the settings given are compared and changed; the others stay as they are. An
    empty list or empty string resets a setting to swcmp's default (C(swcmp session unset)).
  - Paths are made absolute on the target, as swcmp stores them.
  - Secrets are never module options. The MAC secret (O(mac_secret_file)), the TLS client
    key and the token PIN are files the play puts in place (mode 0600, with C(no_log));
    the module passes their paths only and never reads them.
  - Returns the session's settings and its status (certificate, next renewal, last
    result) and sets the fact C(swcmp_status), the status of every session on the host.
  - Turning auto-update on runs swcmp's checks (C(swcmp session enable-auto-update)); the
    session needs a certificate first, see M(swcmp.gateway.swcmp_request).
version_added: "0.1.0"
author: swcmp contributors (!UNKNOWN)
options:
  name:
    description: The session's name (1-64 letters, digits, C(-), C(_), C(.)).
    type: str
    required: true
  state:
    description:
      - V(present) creates or changes the session, V(absent) deletes its settings (the
        key, certificates and state stay on disk, as with C(swcmp session delete)).
    type: str
    choices: [present, absent]
    default: present
  revoke:
    description:
      - With O(state=absent), first revoke the session's current certificate at the CA
        (C(swcmp session delete --revoke), reason cessationOfOperation). The session is
        kept when the revocation fails.
    type: bool
    default: false
  auto_update:
    description:
      - Renew automatically. V(true) runs the checks and fails with their report if one
        fails; not given leaves it as it is.
    type: bool
  entity:
    description: Subject DN put in requests (RFC 4514 or slash form); compared as typed.
    type: str
  sans:
    description: subjectAltNames as C(DNS:x), C(IP:x), C(EMAIL:x), C(URI:x); replaces the stored list.
    type: list
    elements: str
  ca_name:
    description: The CA's DN, RDN order as in the CA certificate.
    type: str
  server_url:
    description: Where CMP messages are POSTed (http or https).
    type: str
  profile_label:
    description:
      - RFC 9811 profile label; messages go to C(/.well-known/cmp/p/LABEL) on the server
        URL's host (the server URL then has no path). V("") removes it.
    type: str
  operation_paths:
    description:
      - How each message's path is formed. V(none) sends every message to the server URL;
        V(labels) adds RFC 9483 operation labels (C(.../initialization), C(.../keyupdate));
        V(body) adds each message's body type (C(.../ir), C(.../certConf)).
    type: str
    choices: [none, labels, body]
  operation_urls:
    description:
      - C(OPERATION=URL) items, one URL per operation (C(ir), C(cr), C(kur), C(p10cr), C(rr),
        C(genm) or an RFC 9483 label), for CAs with an alias per operation; replaces the
        stored list.
    type: list
    elements: str
  ir_auth:
    description: How an initial request is authenticated.
    type: str
    choices: [mac, signature]
  mac_ref:
    description: The reference value (senderKID) from the CA operator.
    type: str
  mac_secret_file:
    description: File holding only the MAC secret (mode 0600). Only its path is used.
    type: path
  mac_alg:
    description: MAC algorithm (PasswordBasedMac with HMAC-SHA256 or HMAC-SHA1, or PBMAC1).
    type: str
    choices: [hmac-sha256, hmac-sha1, pbmac1]
  mac_iterations:
    description: Iteration count of the MAC key derivation (100-100000, default 10000).
    type: int
  auth_cert:
    description: Certificate that signs requests (default the session's own certificate).
    type: path
  auth_key:
    description: Key of O(auth_cert).
    type: path
  trust:
    description: CA certificate files that verify signed answers; replaces the stored list.
    type: list
    elements: path
  key:
    description: Key pair name (C(private/NAME.key)) or a C(pkcs11:) URI; swcmp defaults it to the session's name.
    type: str
  regenerate:
    description: Make a fresh key at each update instead of re-certifying the same key.
    type: bool
  key_type:
    description: Type of newly generated keys, e.g. C(rsa:3072), C(ecdsa:p256), C(ed25519).
    type: str
  expire_time:
    description: When to renew, a percentage of the validity left (C(50) or C(50%)) or a duration before expiry (C(30d), C(1d12h)).
    type: str
  connections:
    description: swanctl.conf connections that use the certificate; replaces the stored list.
    type: list
    elements: str
  tls_ca_bundle:
    description: CA bundle that verifies an https CMP server.
    type: path
  server_cert:
    description: Pinned CMP server signing certificates; replaces the stored list.
    type: list
    elements: path
  extra_certs:
    description: Certificates added to the extraCerts of signed requests; replaces the stored list.
    type: list
    elements: path
  ignore_keyusage:
    description: Accept answers signed by a certificate without digitalSignature keyUsage.
    type: bool
  implicit_confirm:
    description: Ask the CA to grant implicitConfirm.
    type: bool
  cert_profile:
    description: Certificate profile named in requests (RFC 9483 3.1).
    type: str
  timeout:
    description: Seconds one exchange with the CA may take (1-600).
    type: int
  tls_client_cert:
    description: TLS client certificate for a CA behind mutual TLS.
    type: path
  tls_client_key:
    description: Its unencrypted key file (mode 0600). Only its path is used.
    type: path
  revoke_superseded:
    description: After each key update, revoke the replaced certificate.
    type: bool
  granted_with_mods:
    description:
      - A certificate the CA granted with modifications. V(check) takes it only when its
        subject, SANs and key are the ones asked; V(accept) takes it (logged); V(reject)
        refuses it.
    type: str
    choices: [check, accept, reject]
  renew_with:
    description:
      - How a renewal asks for the new certificate. V(kur) (key update, default), V(cr) (a
        certificate request signed with the current certificate) or V(p10cr) (a PKCS#10
        request signed by the new key), for CAs whose policy refuses key updates.
    type: str
    choices: [kur, cr, p10cr]
  poll_limit:
    description:
      - How long a renewal's CA transaction that the CA keeps answering waiting is
        continued, across runs, from its request; then it is abandoned and the next attempt
        sends a new request. Seconds, or a duration as C(swcmp session set --poll-limit)
        takes it (V(1d), V(12h), V(90m), V(1d12h)); from 1 second to 30 days, swcmp's
        default is a day. Compared in seconds, so V(1d) and V(86400) are the same.
    type: raw
  ask_template:
    description:
      - Ask the CA's certificate request template (genm certReqTemplate) before an initial
        request and before a key update with a new key, and refuse a request it forbids
        before sending it (swcmp's default is true; false for a CA that cannot take the
        question).
    type: bool
  pkcs11_module:
    description: PKCS#11 module of the token that holds a C(pkcs11:) O(key).
    type: path
  pin_file:
    description: File holding only the token's user PIN (mode 0600). Only its path is used.
    type: path
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
    description: Reports what would change and changes nothing.
  diff_mode:
    support: full
    description: Shows the settings (and auto_update) before and after.
notes:
  - Needs swcmp on the target; the swcmp.gateway.swcmp role installs it.
"""

EXAMPLES = r"""
- name: The MAC secret, readable by root only and never logged
  ansible.builtin.copy:
    content: "{{ vault_swcmp_mac_secret }}"
    dest: /etc/swcmp/gw.secret
    mode: "0600"
  no_log: true

- name: Session gw as declared
  swcmp.gateway.swcmp_session:
    name: gw
    entity: "CN={{ inventory_hostname }},O=Example"
    sans: ["DNS:{{ inventory_hostname }}"]
    ca_name: /CN=Example Issuing CA
    server_url: http://ca.example.net/pkix/
    mac_ref: "{{ swcmp_mac_ref }}"
    mac_secret_file: /etc/swcmp/gw.secret
    expire_time: 30d
    connections: [site-to-site]

- name: Enrol once
  swcmp.gateway.swcmp_request:
    name: gw
    request: initial

- name: Then renew automatically
  swcmp.gateway.swcmp_session:
    name: gw
    auto_update: true

- name: Decommission
  swcmp.gateway.swcmp_session:
    name: gw
    state: absent
    revoke: true
"""

RETURN = r"""
session:
  description: The session's settings as C(swcmp session show --json) gives them (after the change; before it in check mode; absent when deleted).
  returned: when the session exists
  type: dict
status:
  description: The session's entry of C(swcmp status --json) (certificate, next_renewal, last_result, state...).
  returned: when the session exists
  type: dict
changes:
  description: The settings that differ from the declaration (field names), C(auto_update) and C(created) or C(deleted).
  returned: always
  type: list
  elements: str
revoked:
  description: swcmp's message about the revocation.
  returned: when O(revoke) revoked a certificate
  type: str
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

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.swcmp.gateway.plugins.module_utils.swcmp_cli import (
    COMMON_ARGS,
    Swcmp,
    SwcmpError,
    normalize_expire_time,
    normalize_operation_url,
    normalize_san,
    normalize_seconds,
)

#: Setting (field name as swcmp shows it) -> (session set option, Ansible type).
SETTINGS = {
    "entity": ("--entity", "str"),
    "sans": ("--san", "list"),
    "ca_name": ("--ca-name", "str"),
    "server_url": ("--server-url", "str"),
    "profile_label": ("--profile-label", "str"),
    "operation_paths": ("--operation-paths", "str"),
    "operation_urls": ("--operation-url", "list"),
    "ir_auth": ("--ir-auth", "str"),
    "mac_ref": ("--mac-ref", "str"),
    "mac_secret_file": ("--mac-secret-file", "path"),
    "mac_alg": ("--mac-alg", "str"),
    "mac_iterations": ("--mac-iterations", "int"),
    "auth_cert": ("--auth-cert", "path"),
    "auth_key": ("--auth-key", "path"),
    "trust": ("--trust", "paths"),
    "key": ("--key", "str"),
    "regenerate": ("--regenerate", "bool"),
    "key_type": ("--key-type", "str"),
    "expire_time": ("--expire-time", "str"),
    "connections": ("--connection", "list"),
    "tls_ca_bundle": ("--tls-ca-bundle", "path"),
    "server_cert": ("--server-cert", "paths"),
    "extra_certs": ("--extra-certs", "paths"),
    "ignore_keyusage": ("--ignore-keyusage", "bool"),
    "implicit_confirm": ("--implicit-confirm", "bool"),
    "cert_profile": ("--cert-profile", "str"),
    "timeout": ("--timeout", "int"),
    "tls_client_cert": ("--tls-client-cert", "path"),
    "tls_client_key": ("--tls-client-key", "path"),
    "revoke_superseded": ("--revoke-superseded", "bool"),
    "granted_with_mods": ("--granted-with-mods", "str"),
    "renew_with": ("--renew-with", "str"),
    "poll_limit": ("--poll-limit", "raw"),
    "ask_template": ("--ask-template", "bool"),
    "pkcs11_module": ("--pkcs11-module", "path"),
    "pin_file": ("--pin-file", "path"),
}

_CHOICES = {"ir_auth": ["mac", "signature"], "mac_alg": ["hmac-sha256", "hmac-sha1", "pbmac1"],
            "granted_with_mods": ["check", "accept", "reject"],
            "operation_paths": ["none", "labels", "body"],
            "renew_with": ["kur", "cr", "p10cr"]}


def _argument_spec():
    spec = dict(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        revoke=dict(type="bool", default=False),
        auto_update=dict(type="bool"),
    )
    for field, (_option, kind) in SETTINGS.items():
        if kind in ("list", "paths"):
            spec[field] = dict(type="list", elements="path" if kind == "paths" else "str")
        else:
            spec[field] = dict(type=kind)
        if field in _CHOICES:
            spec[field]["choices"] = _CHOICES[field]
    spec["key"]["no_log"] = False  # the key pair's name or pkcs11: URI, never key material
    spec.update(COMMON_ARGS)
    return spec


def _wanted(params):
    """The declared settings, normalized as swcmp shows them; None = not declared,
    and "" or [] = back to swcmp's default."""
    out = {}
    for field, (_option, kind) in SETTINGS.items():
        value = params.get(field)
        if value is None:
            continue
        if kind == "path":
            value = os.path.abspath(value) if value else ""
        elif kind == "paths":
            value = [os.path.abspath(v) for v in value]
        elif field == "sans":
            value = [normalize_san(v) for v in value]
        elif field == "operation_urls":
            value = [normalize_operation_url(v) for v in value]
        elif field == "expire_time":
            value = normalize_expire_time(value) if str(value).strip() else ""
        elif field == "poll_limit":
            value = normalize_seconds(value) if str(value).strip() else ""
        out[field] = value
    return out


def _is_unset(value):
    return value == "" or value == []


def _differs(current, field, value):
    have = current.get(field)
    if _is_unset(value):
        return have not in (None, [], "")
    if field == "expire_time":
        return normalize_expire_time(have) != value
    return have != value


def _set_args(values):
    args = []
    for field, value in values.items():
        option, kind = SETTINGS[field]
        if kind == "bool":
            args.append(option if value else "--no-" + option[2:])
        elif kind in ("list", "paths"):
            for item in value:
                args += [option, item]
        else:
            args += [option, str(value)]
    return args


def _view(session, fields):
    """The part of a session shown in --diff: the declared fields and auto_update."""
    if session is None:
        return {}
    return dict((f, session.get(f)) for f in sorted(fields) if f in session)


def _after(current, wanted):
    after = dict(current or {})
    for field, value in wanted.items():
        after[field] = None if value == "" else value
    return after


def main():
    module = AnsibleModule(argument_spec=_argument_spec(), supports_check_mode=True)
    p = module.params
    name = p["name"]
    swcmp = Swcmp(module)
    result = dict(changed=False, changes=[])
    try:
        sessions, broken = swcmp.sessions()
        for e in broken:
            if os.path.basename(str(e.get("path", ""))) == name + ".toml":
                module.fail_json(msg="session %s: %s" % (name, e.get("error")),
                                 hint=e.get("hint"), **result)
        current = sessions.get(name)

        if p["state"] == "absent":
            if current is not None:
                result.update(changed=True, changes=["deleted"])
                if module._diff:
                    result["diff"] = dict(before=_view(current, current), after={})
                if not module.check_mode:
                    args = ["session", "delete", name] + (["--revoke"] if p["revoke"] else [])
                    data = swcmp.run(*args)
                    if data.get("revoked"):
                        result["revoked"] = data["revoked"]
            result["ansible_facts"] = dict(swcmp_status=swcmp.status())
            module.exit_json(**result)

        wanted = _wanted(p)
        changes = [f for f, v in wanted.items()
                   if current is None or _differs(current, f, v)]
        if current is None:
            changes.insert(0, "created")
        auto = p["auto_update"]
        if auto is not None and (current is None or bool(current.get("auto_update")) != auto):
            changes.append("auto_update")
        result["changes"] = changes
        result["changed"] = bool(changes)

        if module._diff and changes:
            shown = set(changes) - {"created"} if current is not None else set(wanted)
            if "auto_update" in changes or current is None:
                shown.add("auto_update")
            after = _after(current, dict((f, wanted[f]) for f in changes if f in wanted))
            if auto is not None:
                after["auto_update"] = auto
            elif current is None:
                after["auto_update"] = False
            result["diff"] = dict(before=_view(current, shown) if current else {},
                                  after=_view(after, shown))

        if changes and not module.check_mode:
            to_set = dict((f, wanted[f]) for f in changes if f in wanted)
            set_values = dict((f, v) for f, v in to_set.items() if not _is_unset(v))
            unset = [f for f, v in to_set.items() if _is_unset(v)]
            # Unset first: a value back at its default never conflicts with another
            # setting, while the values set may conflict with one still to be unset
            # (a server URL with a path beside the profile label it replaces).
            if unset and current is not None:
                swcmp.run("session", "unset", name, *unset)
            if current is None:
                swcmp.run("session", "create", name, *_set_args(set_values))
            elif set_values:
                swcmp.run("session", "set", name, *_set_args(set_values))
            if "auto_update" in changes:
                if auto:
                    swcmp.run("session", "enable-auto-update", name)
                else:
                    swcmp.run("session", "disable-auto-update", name)

        if module.check_mode and current is None:
            result["ansible_facts"] = dict(swcmp_status=swcmp.status())
            module.exit_json(**result)
        result["session"] = swcmp.run("session", "show", name) if changes else current
        facts = swcmp.status()
        result["status"] = facts.get(name)
        result["ansible_facts"] = dict(swcmp_status=facts)
    except SwcmpError as e:
        module.fail_json(**dict(result, **e.fail_args()))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
