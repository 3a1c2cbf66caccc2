"""dovecot.conf and passwd-files of a test instance, in the syntax of its generation (2.3 or 2.4).

Both generations get the same server: IMAP (and LMTP when asked for), plain-text logins without SSL,
passwd-file users (with their ``user_*`` fields in passdb and userdb replies), one mail process per session
(the 2.3 kick signals processes), and optionally an IMAP proxy into the same instance. The proxy is a
second imap-login listener with a passdb placed first that only answers logins arriving on that listener's
port (keyed by the real local port, which the proxied connection does not forward), with ``proxy=y
host=127.0.0.1 port=<imap_port>``; logins on the backend port fall through to the regular passdb. The
backend trusts 127.0.0.1 only (where the proxy connects from), so it takes the client's address from the
proxy and penalties of other IPs still count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doveadm_py.testing.dovecot import DovecotInstance

HEADER = "# Written by doveadm_py.testing for a throwaway test instance; removed on stop.\n"
PROXY_FROM = "127.0.0.1/32"


def _fields(fields: Mapping[str, str], userdb_prefix: bool) -> str:
    """Extra fields of a passwd-file line. 2.4's passwd-file userdb takes them with a ``userdb_`` prefix."""
    parts = [f"{key}={value}" for key, value in fields.items()]
    if userdb_prefix:
        parts += [f"userdb_{key}={value}" for key, value in fields.items()]
    return " ".join(parts)


def passwd_lines(instance: DovecotInstance, homes: str, uid: int, gid: int) -> str:
    """The regular passwd-file. Homes are numbered, not named after users: a username may contain '/'."""
    userdb_prefix = instance.server.generation >= 2
    return "".join(
        f"{user}:{{PLAIN}}{password}:{uid}:{gid}::{homes}/{number}::"
        f"{_fields(instance.user_fields.get(user, {}), userdb_prefix)}\n"
        for number, (user, password) in enumerate(instance.users.items())
    )


def _proxy_entries(instance: DovecotInstance, key: str) -> str:
    return "".join(
        f"{key}{user}:{{PLAIN}}{password}::::::proxy=y host={instance.host} "
        f"port={instance.backend_port or instance.imap_port}"
        f"{' ' + _fields(instance.user_fields[user], False) if instance.user_fields.get(user) else ''}\n"
        for user, password in instance.users.items()
    )


def proxy_passwd_lines(instance: DovecotInstance) -> dict[str, str]:
    """The proxy passdb's files (name -> text) in the work dir."""
    if instance.server.generation == 1:
        # One file, keys prefixed with the port the login arrived on (see config_v1).
        return {"proxy-passwd": _proxy_entries(instance, f"px{instance.proxy_port}-")}
    # One file per port: the proxy's lists every user, the backend's is empty (unknown user: next passdb).
    return {f"proxy-{instance.proxy_port}": _proxy_entries(instance, ""), f"proxy-{instance.imap_port}": ""}


def _lmtp(instance: DovecotInstance, address: str) -> tuple[str, str]:
    """(settings, service block) of the LMTP listener. Deliveries register their recipients in anvil only
    with a concurrency limit (2.3's default 0 is none, 2.4's 10 one): set it on both."""
    if not instance.lmtp:
        return "", ""
    settings = "lmtp_user_concurrency_limit = 10\n"
    service = f"""\
service lmtp {{
  inet_listener lmtp {{
    {address} = {instance.host}
    port = {instance.lmtp_port}
  }}
}}
"""
    return settings, service


def config_v1(instance: DovecotInstance) -> str:
    """Dovecot 2.3 configuration."""
    work = instance.inner(instance._work())
    uid, _ = instance.server.account("dovecot")
    proxy_passdb = proxy_listener = ""
    if instance.proxy:
        # %{real_lport}, not %{lport}: the proxy forwards its connection's ports, which would loop.
        proxy_passdb = f"""\
login_trusted_networks = {PROXY_FROM}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=px%{{real_lport}}-%u {work}/proxy-passwd
}}
"""
        proxy_listener = f"""\
  inet_listener imap-proxy {{
    address = {instance.host}
    port = {instance.proxy_port}
  }}
"""
    lmtp_settings, lmtp_service = _lmtp(instance, "address")
    return f"""\
{HEADER}base_dir = {work}/run
state_dir = {work}/state
listen = {instance.host}
protocols = imap{" lmtp" if instance.lmtp else ""}
{lmtp_settings}ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = {int(instance.auth_failure_delay)} secs
log_path = {work}/dovecot.log
info_log_path = {work}/dovecot.log
first_valid_uid = {uid}
mail_location = maildir:~/Maildir
mail_max_userip_connections = 100
shutdown_clients = yes
{proxy_passdb}passdb {{
  driver = passwd-file
  args = {work}/passwd
}}
userdb {{
  driver = passwd-file
  args = {work}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = {instance.host}
    port = {instance.imap_port}
  }}
{proxy_listener}  inet_listener imaps {{
    port = 0
  }}
}}
# One process per session: the 2.3 kick signals processes, so sessions must not share one.
service imap {{
  client_limit = 1
  process_limit = 500
}}
{lmtp_service}{instance.extra_conf}
"""


def config_v2(instance: DovecotInstance) -> str:
    """Dovecot 2.4 configuration (2.4.0 syntax: named passdb/userdb blocks, ``listen`` per listener)."""
    work = instance.inner(instance._work())
    uid, _ = instance.server.account("dovecot")
    proxy_passdb = proxy_listener = ""
    if instance.proxy:
        # %{real_local_port}: the port this connection really arrived on (not the one a proxy forwards).
        proxy_passdb = f"""\
login_trusted_networks = {PROXY_FROM}
passdb proxy {{
  driver = passwd-file
  passwd_file_path = {work}/proxy-%{{real_local_port}}
}}
"""
        proxy_listener = f"""\
  inet_listener imap-proxy {{
    listen = {instance.host}
    port = {instance.proxy_port}
  }}
"""
    lmtp_settings, lmtp_service = _lmtp(instance, "listen")
    return f"""\
{HEADER}dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
base_dir = {work}/run
state_dir = {work}/state
listen = {instance.host}
protocols = imap{" lmtp" if instance.lmtp else ""}
{lmtp_settings}ssl = no
auth_allow_cleartext = yes
auth_mechanisms = plain login
auth_failure_delay = {int(instance.auth_failure_delay)} secs
log_path = {work}/dovecot.log
info_log_path = {work}/dovecot.log
first_valid_uid = {uid}
mail_driver = maildir
mail_path = ~/Maildir
mail_max_userip_connections = 100
shutdown_clients = yes
{proxy_passdb}passdb passwd-file {{
  passwd_file_path = {work}/passwd
}}
userdb passwd-file {{
  passwd_file_path = {work}/passwd
}}
service imap-login {{
  inet_listener imap {{
    listen = {instance.host}
    port = {instance.imap_port}
  }}
{proxy_listener}  inet_listener imaps {{
    port = 0
  }}
}}
# One process per session, as on 2.3, so both generations hold the same processes.
service imap {{
  client_limit = 1
  process_limit = 500
}}
{lmtp_service}{instance.extra_conf}
"""
