"""``make demo``: dvadm's main job end to end on a throwaway server, then everything stopped.

With Dovecot installed (and root, which Dovecot needs) the server is a real Dovecot 2.3
with real IMAP sessions logged in from several 127.x addresses. Without it, the anvil
simulator plays a Dovecot 2.4 server with the same sessions.
"""

from __future__ import annotations

import os
import shlex
import sys

from .cli import run_dvadm

STEPS = (("who",), ("who", "-1", "ja*"), ("kick", "jan?"), ("kick", "foo", "127.0.0.0/24"), ("who",))


def show(global_args: tuple[str, ...], args: tuple[str, ...]) -> None:
    print(f"$ dvadm {shlex.join(args)}", flush=True)
    proc = run_dvadm(*global_args, *args)
    sys.stdout.write(proc.stdout.decode(errors="replace"))
    sys.stdout.write(proc.stderr.decode(errors="replace"))
    print(f"(exit {proc.returncode})\n", flush=True)


def demo_real_dovecot() -> None:
    from .dovecot import REFERENCE_SESSIONS, DovecotInstance
    from .imap import open_sessions

    with DovecotInstance() as dovecot:
        where = f"master pid {dovecot.master_pid}, IMAP on 127.0.0.1:{dovecot.imap_port}"
        print(f"Started a throwaway Dovecot 2.3 ({where})")
        with open_sessions(dovecot, REFERENCE_SESSIONS) as sessions:
            print(f"Logged in {len(sessions)} IMAP sessions from 127.x addresses\n")
            for step in STEPS:
                show(("-c", str(dovecot.config_path)), step)
            gone = sorted(f"{s.user}@{s.source_ip}" for s in sessions.disconnected())
            print("IMAP sessions the server disconnected:", ", ".join(gone) or "none")
    print("Stopped the throwaway Dovecot.")


def demo_simulator() -> None:
    from .dovecot import REFERENCE_SESSIONS
    from .simulator import AnvilSimulator, SimSession

    sessions = [
        SimSession(pid=7000 + i, username=user, ip=ip, alt={"user_alias": f"{user.split('@')[0]}-alias"})
        for i, (user, ip) in enumerate(REFERENCE_SESSIONS)
    ]
    with AnvilSimulator(protocol=2, sessions=sessions, alt_fields=["user_alias"]) as sim:
        print(f"No Dovecot here (or not root): the anvil simulator plays Dovecot 2.4 at {sim.path}\n")
        for step in STEPS:
            show(("-o", f"base_dir={os.path.dirname(sim.path)}"), step)
    print("Stopped the simulator.")


def main() -> int:
    from .dovecot import dovecot_binary

    if dovecot_binary() and os.geteuid() == 0:
        demo_real_dovecot()
    else:
        demo_simulator()
    return 0


if __name__ == "__main__":
    sys.exit(main())
