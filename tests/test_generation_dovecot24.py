"""A real Dovecot 2.4 under CPU load never receives a protocol 1 line from ``dvadm who``.

With a fixed 2 ms grace for the greeting, about one run in eleven on a loaded 2-core machine took a
late-greeting 2.4 for a 2.3 and sent it ``VERSION anvil 1 0``, which anvil logs as "Anvil client not
compatible". Now the first contact with a socket waits for the greeting up to a second, and later runs
know the socket's generation (doveadm_py.anvil.generations). Shown here with 1,000 runs while busy
processes keep both cores loaded; one run in ten starts with an empty cache (a first contact).
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from doveadm_py.testing import DovecotInstance
from doveadm_py.testing.cli import run_dvadm
from doveadm_py.testing.fixtures import dovecot_servers
from doveadm_py.testing.servers import DovecotServer

pytestmark = [pytest.mark.dovecot, pytest.mark.slow, dovecot_servers("2.4-sid")]

RUNS = 1000
FIRST_CONTACT_EVERY = 10
WORKERS = 3
BUSY = 2  # processes spinning on the CPU meanwhile
MAX_SECONDS = 2400.0  # the whole loop (about 5 min on an idle 2-core machine, 20 busy)


@pytest.fixture(scope="module")
def server(dovecot_server: DovecotServer) -> Iterator[DovecotInstance]:
    with DovecotInstance(server=dovecot_server) as instance:
        yield instance


@pytest.fixture
def cpu_load() -> Iterator[None]:
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(BUSY)]
    try:
        yield
    finally:
        for proc in busy:
            proc.kill()
            proc.wait(10)


def test_loaded_24_never_gets_a_protocol_1_line(server: DovecotInstance, cpu_load: None) -> None:
    anvil = str(server.anvil_path)
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as shared, tempfile.TemporaryDirectory() as fresh_root:

        def one(i: int) -> tuple[int, int, bytes]:
            cache = shared
            if i % FIRST_CONTACT_EVERY == 0:  # an empty cache of its own: the socket is unknown
                cache = tempfile.mkdtemp(dir=fresh_root)
            if time.monotonic() - start > MAX_SECONDS:
                return i, -1, b"out of time"
            done = run_dvadm("who", "-a", anvil, env={"XDG_CACHE_HOME": cache}, timeout=60)
            return i, done.returncode, done.stderr

        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            results = list(pool.map(one, range(RUNS)))
    failed = [r for r in results if r[1] != 0]
    log = server.log_text()
    assert "not compatible" not in log, [line for line in log.splitlines() if "not compatible" in line][:5]
    assert failed == [], failed[:5]
