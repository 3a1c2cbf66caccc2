"""Where a command's sessions, kicks and penalties come from: the local anvil or a remote server.

:mod:`.base` defines the interface and result types, :mod:`.local` wraps the anvil socket,
:mod:`.http` speaks a Dovecot server's doveadm HTTP API, :mod:`.fleet` reads the fleet file,
selects servers for ``-S`` and asks them all at once. Only :mod:`.base` and :mod:`.local`
are on the start-up path of a local command; the rest is imported when ``-S`` is given.
"""
