"""Start-up imports of ``dvadm who`` must not grow unnoticed (start-up time is a target).

A fresh interpreter runs ``dvadm who -a <simulator socket>`` through ``doveadm_py.app.main``
and reports every module it imported. The test fails when that run pulls in something heavy
(cmd2, prettytable, yaml, asyncio), another command's code, the simulator or the test harness,
or any ``doveadm_py`` module or other module that is not on today's allowlists.
Modules that ``import cliff.app, stevedore`` imports by themselves (json, subprocess,
ipaddress, email, ...) are measured in a second fresh interpreter and are not dvadm's to
control, so they are not asserted on.

When a change legitimately adds or removes a module on this path, update the allowlists
below, and check ``bench/run.py --only startup`` first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from doveadm_py.testing.simulator import AnvilSimulator

REPO = Path(__file__).resolve().parent.parent

# doveadm_py modules imported by `dvadm who -a SOCKET` (measured; same for protocol 1 and 2).
DVADM_MODULES = frozenset(
    {
        "doveadm_py",
        "doveadm_py.aggregation",
        "doveadm_py.anvil",
        "doveadm_py.anvil.bulk",
        "doveadm_py.anvil.client",
        "doveadm_py.anvil.connection",
        "doveadm_py.anvil.dump",
        "doveadm_py.anvil.escape",
        "doveadm_py.anvil.generations",
        "doveadm_py.anvil.kick",
        "doveadm_py.anvil.penalty",
        "doveadm_py.anvil.records",
        "doveadm_py.app",
        "doveadm_py.command",
        "doveadm_py.commands",
        "doveadm_py.commands.who",
        "doveadm_py.errors",
        "doveadm_py.globalopts",
        "doveadm_py.loader",
        "doveadm_py.masks",
        "doveadm_py.netmask",
        "doveadm_py.output",
        "doveadm_py.output.table",
        "doveadm_py.sessionview",
        "doveadm_py.settings",
        "doveadm_py.transport",
        "doveadm_py.transport.local",
        "doveadm_py.transport.options",
        "doveadm_py.streams",
        "doveadm_py.wildcard",
    }
)
# Other modules dvadm adds to what `import cliff.app, stevedore` already imports (measured).
EXTRA_MODULES = frozenset({"cliff.commandmanager", "dataclasses", "gc", "getopt"})
# Never on the `who` path, whatever cliff or stevedore import: a prefix matches submodules too.
FORBIDDEN = (
    "cmd2",
    "prettytable",
    "yaml",
    "asyncio",
    "cliff.interactive",
    "cliff.formatters",
    "doveadm_py.commands.kick",
    "doveadm_py.procsafety",
    "doveadm_py.audit",
    "doveadm_py.testing",
    "doveadm_py.output.json",
    "doveadm_py.output.tab",
    "doveadm_py.output.flow",
    "doveadm_py.output.pager",
    "doveadm_py.output.formatted",
    # -S only: the HTTP client, the fleet file's TOML parser, the remote transport
    "urllib3",
    "httpx",
    "tomllib",
    "tomli",
    "doveadm_py.transport.http",
    "doveadm_py.transport.fleet",
    "doveadm_py.transport.kick",
)

RUN_WHO = """
import sys
from doveadm_py.app import main
rc = main(sys.argv[1:-1])
sys.stdout.flush()
with open(sys.argv[-1], "w", encoding="utf-8") as f:
    f.write("\\n".join([str(rc), *sorted(sys.modules)]))
"""
BASELINE = "import sys, cliff.app, stevedore; print('\\n'.join(sorted(sys.modules)))"


def fresh_python(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def baseline_modules(tmp_path_factory: pytest.TempPathFactory) -> frozenset[str]:
    proc = fresh_python(["-c", BASELINE], tmp_path_factory.mktemp("baseline"))
    assert proc.returncode == 0, proc.stderr
    return frozenset(proc.stdout.split())


@pytest.fixture(params=[1, 2], ids=["protocol1", "protocol2"])
def idle_anvil(request: pytest.FixtureRequest) -> Iterator[str]:
    with AnvilSimulator(request.param) as sim:
        sim.generate(3)
        yield sim.path


@pytest.fixture
def who_modules(idle_anvil: str, tmp_path: Path) -> frozenset[str]:
    report = tmp_path / "modules.txt"
    proc = fresh_python(["-c", RUN_WHO, "who", "-a", idle_anvil, str(report)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rc, *modules = report.read_text(encoding="utf-8").split("\n")
    assert rc == "0", proc.stderr
    # the command really ran: a title line and the generated sessions' row(s)
    lines = proc.stdout.splitlines()
    assert len(lines) >= 2 and lines[0].startswith("username") and "@example." in lines[1], proc.stdout
    return frozenset(modules)


def test_no_forbidden_module(who_modules: frozenset[str]) -> None:
    found = [f for f in FORBIDDEN if any(m == f or m.startswith(f + ".") for m in who_modules)]
    assert not found, f"`dvadm who` imported modules it must never import: {found}"


def test_dvadm_modules_are_the_allowlist(who_modules: frozenset[str]) -> None:
    mine = {m for m in who_modules if m == "doveadm_py" or m.startswith("doveadm_py.")}
    new, gone = sorted(mine - DVADM_MODULES), sorted(DVADM_MODULES - mine)
    assert not new, (
        f"`dvadm who` now imports {new}: import them lazily where they are used, or (if start-up "
        "stays within its target, see bench/run.py --only startup) add them to DVADM_MODULES"
    )
    assert not gone, f"`dvadm who` no longer imports {gone}: good, remove them from DVADM_MODULES"


def test_other_modules_are_the_allowlist(
    who_modules: frozenset[str], baseline_modules: frozenset[str]
) -> None:
    # __future__ (every `from __future__ import annotations` imports it) is in the baseline only when
    # an editable install's import hook loaded it first: not counted, so an installed sdist passes too.
    added = {m for m in who_modules - baseline_modules if not m.startswith("doveadm_py")} - {"__future__"}
    new, gone = sorted(added - EXTRA_MODULES), sorted(EXTRA_MODULES - added)
    assert not new, (
        f"`dvadm who` imports {new} beyond what `import cliff.app, stevedore` imports: import them "
        "lazily, or add them to EXTRA_MODULES after checking start-up time"
    )
    assert not gone, f"`dvadm who` no longer adds {gone}: remove them from EXTRA_MODULES"
