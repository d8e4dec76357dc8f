"""A scripted charon for unit tests: speaks VICI on one end of a socketpair.

It keeps the state the deployers and the start hook change (keys loaded over
VICI, certificates, connections) and can refuse a command or drop the
connection at a chosen command, which a real charon does not do on request.
The wire format is the vici package's own (:mod:`vici.protocol`), so what the
client sends is decoded exactly as charon's vici plugin would receive it.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from vici.protocol import FiniteStream, Message, Packet

from swcmp.strongswan.vici import key_id_from_public_key


def _recv(sock: socket.socket) -> bytes | None:
    head = b""
    while len(head) < 4:
        got = sock.recv(4 - len(head))
        if not got:
            return None
        head += got
    (length,) = struct.unpack("!I", head)
    data = b""
    while len(data) < length:
        got = sock.recv(length - len(data))
        if not got:
            return None
        data += got
    return data


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack("!I", len(payload)) + payload)


@dataclass
class ScriptedCharon:
    """charon's credential and connection state, and the faults to inject.

    ``refuse`` maps a command to the errmsg charon answers it with, the first
    time it comes; ``drop_at`` names a command at which the connection is closed
    instead of answered (once).
    """

    keys: dict[str, bytes] = field(default_factory=dict)
    certs: list[tuple[bytes, str]] = field(default_factory=list)  # (DER, flag)
    crls: list[bytes] = field(default_factory=list)  # DER, as loaded
    conns: dict[str, dict[str, Any]] = field(default_factory=dict)
    sas: dict[int, str] = field(default_factory=dict)  # uniqueid -> connection
    #: CHILD_SAs per IKE SA (uniqueid -> names); IKE SAs not named here have none
    children: dict[int, tuple[str, ...]] = field(default_factory=dict)
    #: what ``version`` answers
    version: str = "5.9.8"
    refuse: dict[str, str] = field(default_factory=dict)
    drop_at: str | None = None
    log: list[str] = field(default_factory=list)

    def connect(self) -> socket.socket:
        """A socket factory for ``connect=``: a new session served on a thread."""
        ours, theirs = socket.socketpair()
        threading.Thread(target=self._serve, args=(theirs,), daemon=True).start()
        return ours

    # -- the commands

    def _answer(self, command: str, msg: dict[str, Any]) -> dict[str, Any]:
        if command == "get-keys":
            return {"keys": list(self.keys)}
        if command == "version":
            return {"daemon": "charon", "version": self.version, "sysname": "Linux"}
        if command == "load-key":
            key = serialization.load_pem_private_key(bytes(msg["data"]), None)
            kid = key_id_from_public_key(key.public_key())
            self.keys[kid] = bytes(msg["data"])
            return {"success": "yes", "id": kid}
        if command == "unload-key":
            self.keys.pop(msg["id"].decode(), None)
            return {"success": "yes"}
        if command == "load-cert" and msg.get("type") == b"X509_CRL":
            self.crls.append(bytes(msg["data"]))
            return {"success": "yes"}
        if command == "load-cert":
            der = x509.load_pem_x509_certificate(bytes(msg["data"])).public_bytes(
                serialization.Encoding.DER)
            self.certs = [(d, f) for d, f in self.certs if d != der]
            self.certs.insert(0, (der, msg["flag"].decode()))
            return {"success": "yes"}
        if command == "flush-certs":
            return {"success": "yes"}
        if command == "load-conn":
            for name, cfg in msg.items():
                self.conns[name] = cfg
            return {"success": "yes"}
        raise KeyError(command)

    def _events(self, command: str) -> list[dict[str, Any]]:
        if command == "list-certs":
            out = []
            for der, flag in self.certs:
                cert = x509.load_der_x509_certificate(der)
                has = key_id_from_public_key(cert.public_key()) in self.keys
                out.append({"type": "X509", "flag": flag, "has_privkey": "yes" if has else "no",
                            "data": der})
            return out
        if command == "list-sas":
            return [{conn: {"uniqueid": str(uid), "child-sas": {
                f"{child}-{n}": {"name": child, "uniqueid": str(n)}
                for n, child in enumerate(self.children.get(uid, ()), 1)}}}
                for uid, conn in self.sas.items()]
        if command == "list-conns":
            return [{name: cfg} for name, cfg in self.conns.items()]
        raise KeyError(command)

    # -- the wire

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            while True:
                data = _recv(sock)
                if data is None:
                    return
                kind = data[0]
                name = data[2:2 + data[1]].decode()
                body = data[2 + data[1]:]
                if kind in (Packet.EVENT_REGISTER, Packet.EVENT_UNREGISTER):
                    _send(sock, struct.pack("!B", Packet.EVENT_CONFIRM))
                    continue
                self.log.append(name)
                if name == self.drop_at:
                    self.drop_at = None
                    sock.shutdown(socket.SHUT_RDWR)
                    return
                msg = Message.deserialize(FiniteStream(body)) if body else {}
                if name in self.refuse:
                    reply: dict[str, Any] = {"success": "no", "errmsg": self.refuse.pop(name)}
                elif name.startswith("list-"):
                    for event in self._events(name):
                        ev = name[:-1]  # list-certs streams list-cert events
                        payload = Message.serialize(event)
                        _send(sock, struct.pack("!BB", Packet.EVENT, len(ev)) + ev.encode()
                              + payload)
                    reply = {}
                else:
                    reply = self._answer(name, msg)
                _send(sock, struct.pack("!B", Packet.CMD_RESPONSE) + Message.serialize(reply))
