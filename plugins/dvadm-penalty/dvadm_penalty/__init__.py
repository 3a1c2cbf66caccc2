"""dvadm-penalty: the ``dvadm penalty`` command, shipped as a separate distribution.

It is also the reference third-party plugin: it uses nothing but :mod:`doveadm_py.api`.
The command lives in :mod:`dvadm_penalty.command`; this module stays empty so that
reading the version does not import dvadm.
"""

from __future__ import annotations

__version__ = "0.1.0"
