"""The fixed choices of session settings, importable without loading anything else:
the CLI's ``--help`` lists them, the session validates against them."""

from swcmp.cmp.choices import GRANTED_WITH_MODS, KEY_TYPES, MAC_ALGS, OPERATION_PATHS, RENEW_WITH

IR_AUTH_MODES = ("mac", "signature")

__all__ = ["GRANTED_WITH_MODS", "IR_AUTH_MODES", "KEY_TYPES", "MAC_ALGS", "OPERATION_PATHS",
           "RENEW_WITH"]
