"""pytest plugin: real Dovecot 2.3 instances and IMAP sessions as fixtures.

Enable it with ``pytest_plugins = ["doveadm_py.testing.fixtures"]`` in your top-level conftest.py.

Fixtures:

- ``dovecot``: a started :class:`DovecotInstance` for one test, with :data:`DEFAULT_USERS` (all ``secret``).
  Customise it with ``@pytest.mark.dovecot(users={...}, extra_conf="...", auth_failure_delay=0)``.
- ``dovecot_factory``: ``dovecot_factory(users=None, extra_conf="", **kwargs)`` starts more instances;
  all are stopped at teardown.
- ``dovecot_module``: one default instance shared by a test module (its tests must not disturb each other).
- ``imap_sessions``: ``imap_sessions(specs, instance=None, password=None)`` logs in idle sessions, one per
  ``(user, source_ip)`` (default instance: the ``dovecot`` fixture), and closes them at teardown.

Without a usable Dovecot 2.3 these fixtures SKIP the test; with ``DVADM_REQUIRE_DOVECOT=1`` they FAIL it
instead, so CI that is meant to have Dovecot cannot silently skip everything. When a test fails, the logs of
the instances it used are added to the report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from doveadm_py.testing.dovecot import (
    BINARY_ENV,
    DovecotInstance,
    dovecot_binary,
    dovecot_version,
    tool_binary,
)
from doveadm_py.testing.imap import SessionGroup, open_sessions

REQUIRE_ENV = "DVADM_REQUIRE_DOVECOT"
_INSTANCES = pytest.StashKey[list[DovecotInstance]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "dovecot(users=None, extra_conf='', **kwargs): needs a real Dovecot 2.3 instance; "
        "the keyword arguments configure the `dovecot` fixture "
        f"(skips without Dovecot unless {REQUIRE_ENV}=1)",
    )


def dovecot_unavailable_reason() -> str | None:
    """Why no test instance can run here, or None if one can."""
    binary = dovecot_binary()
    if not binary:
        source = f"${BINARY_ENV}" if os.environ.get(BINARY_ENV) else "PATH or /usr/sbin"
        return f"no dovecot binary found (looked in {source})"
    for tool in ("doveadm", "doveconf"):
        if not tool_binary(tool, binary):
            return f"no {tool} binary found next to {binary} or on PATH"
    version = dovecot_version(binary)
    if not version or not version.startswith("2.3."):
        return f"{binary} is Dovecot {version or '(unknown version)'}, the test harness needs 2.3"
    if os.geteuid() != 0:
        return "a Dovecot test instance needs root (mail processes switch to the dovecot user)"
    return None


def require_dovecot() -> None:
    """Skip the calling test if Dovecot is unusable, or fail it when $DVADM_REQUIRE_DOVECOT is 1."""
    reason = dovecot_unavailable_reason()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires a real Dovecot", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def dovecot_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., DovecotInstance]]:
    """Start instances on demand: ``dovecot_factory(users=None, extra_conf="", **DovecotInstance kwargs)``."""
    require_dovecot()
    started = request.node.stash.setdefault(_INSTANCES, [])
    mine: list[DovecotInstance] = []

    def make(users: Any = None, extra_conf: str = "", **kwargs: Any) -> DovecotInstance:
        instance = DovecotInstance(users, extra_conf, **kwargs)
        instance.start()
        mine.append(instance)
        started.append(instance)
        return instance

    yield make
    for instance in reversed(mine):
        instance.stop()


@pytest.fixture
def dovecot(
    request: pytest.FixtureRequest, dovecot_factory: Callable[..., DovecotInstance]
) -> DovecotInstance:
    """A started instance for this test, configured by the ``dovecot`` marker's keyword arguments."""
    marker = request.node.get_closest_marker("dovecot")
    return dovecot_factory(**(marker.kwargs if marker else {}))


@pytest.fixture(scope="module")
def dovecot_module() -> Iterator[DovecotInstance]:
    """One default instance for a whole test module (cheaper: each stop costs Dovecot's fixed ~1 s)."""
    require_dovecot()
    with DovecotInstance() as instance:
        yield instance


@pytest.fixture
def imap_sessions(request: pytest.FixtureRequest) -> Iterator[Callable[..., SessionGroup]]:
    """Open idle IMAP sessions: ``imap_sessions([(user, source_ip), ...], instance=None, password=None)``."""
    groups: list[SessionGroup] = []

    def make(
        specs: Sequence[tuple[str, str]],
        instance: DovecotInstance | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> SessionGroup:
        if instance is None:
            instance = request.getfixturevalue("dovecot")
        group = open_sessions(instance, specs, password=password, timeout=timeout)
        groups.append(group)
        return group

    yield make
    for group in groups:
        group.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the Dovecot logs of the instances a failed test used: the server's view is usually the clue."""
    report = yield
    if report.failed:
        instances = list(item.stash.get(_INSTANCES, []))
        funcargs = getattr(item, "funcargs", {})
        instances += [value for value in funcargs.values() if isinstance(value, DovecotInstance)]
        for instance in dict.fromkeys(instances):  # de-duplicated, in order
            report.sections.append((f"dovecot log ({instance.work_dir or 'stopped'})", instance.log_text()))
    return report
