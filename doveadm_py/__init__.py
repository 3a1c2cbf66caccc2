"""dvadm: a doveadm-compatible admin CLI for Dovecot, extensible through entry points.

Kept import-light on purpose: the console script imports this package on every run.
"""

__version__ = "0.1.0"
