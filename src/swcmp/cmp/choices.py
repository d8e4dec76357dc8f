"""The library's choices as plain names, importable without loading anything else
(the CLI lists them in its options)."""

#: The key types the library generates and certifies (``swcmp.cmp.keys``).
KEY_TYPES = ("rsa:2048", "rsa:3072", "rsa:4096", "ecdsa:p256", "ecdsa:p384", "ed25519")
#: The MAC algorithms of :class:`MacProtection` (PasswordBasedMac with these HMACs, PBMAC1).
MAC_ALGS = ("hmac-sha256", "hmac-sha1", "pbmac1")
#: What to do with a certificate granted with modifications (see swcmp.cmp.client).
GRANTED_WITH_MODS = ("check", "accept", "reject")
#: How the path of each message's URL is formed (see swcmp.cmp.urls): ``none`` (every
#: message to the server URL), ``labels`` (RFC 9483 3.3 operation labels added) or
#: ``body`` (each message's body type added, as the Siemens Mock CA routes).
OPERATION_PATHS = ("none", "labels", "body")
#: How a renewal asks for its certificate: a key update (kur), a certificate request
#: signed with the current certificate (cr), or a PKCS#10 request signed by the new key in
#: a message signed with the current certificate (p10cr).
RENEW_WITH = ("kur", "cr", "p10cr")
