"""swcmp: CMPv2 certificate renewal and hot reload for strongSwan gateways."""

__version__ = "0.1.0"
