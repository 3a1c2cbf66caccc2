"""dvadm-proxy: ``dvadm proxy list`` and ``dvadm proxy kick``, shipped as a separate distribution.

The commands live in :mod:`dvadm_proxy.command` (Dovecot 2.3's ipc transport in
:mod:`dvadm_proxy.ipc` and :mod:`dvadm_proxy.v23`); this module stays empty so that reading
the version does not import dvadm.
"""

from __future__ import annotations

__version__ = "0.1.0"
