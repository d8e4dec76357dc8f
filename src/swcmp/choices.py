"""The fixed choices of session settings, importable without loading anything else:
the CLI's ``--help`` lists them, the session validates against them."""

from swcmp.cmp.choices import KEY_TYPES, MAC_ALGS

IR_AUTH_MODES = ("mac", "signature")

__all__ = ["IR_AUTH_MODES", "KEY_TYPES", "MAC_ALGS"]
