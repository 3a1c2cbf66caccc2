"""pytest plugin: real Dovecot instances (2.3 and 2.4) and IMAP sessions as fixtures.

Enable it with ``pytest_plugins = ["doveadm_py.testing.fixtures"]`` in your top-level conftest.py.

Fixtures:

- ``dovecot_server``: the :class:`DovecotServer` a test runs against: ``"2.3"`` (the host's) unless the
  test is parametrized over servers with :func:`dovecot_servers` (``pytestmark = dovecot_servers()`` runs a
  module against 2.3, 2.4-trixie and 2.4-sid, module-scoped so each server's instances are shared).
- ``dovecot``: a started :class:`DovecotInstance` of ``dovecot_server`` for one test, with
  :data:`DEFAULT_USERS` (all ``secret``). Customise it with ``@pytest.mark.dovecot(users={...},
  extra_conf="...", proxy=True, server="2.4-sid", ...)`` (any :class:`DovecotInstance` keyword).
- ``dovecot_factory``: ``dovecot_factory(users=None, extra_conf="", **kwargs)`` starts more instances
  (``server=`` picks another server); all are stopped at teardown.
- ``dovecot_module``: one default instance of ``dovecot_server`` shared by a test module (its tests must not
  disturb each other).
- ``imap_sessions``: ``imap_sessions(specs, instance=None, password=None, port=None)`` logs in idle
  sessions, one per ``(user, source_ip)`` (default instance: the ``dovecot`` fixture; ``port``: e.g. its
  ``proxy_port``), and closes them at teardown.

Without a usable server these fixtures SKIP the test; with ``DVADM_REQUIRE_DOVECOT=1`` they FAIL it instead
(a missing 2.4 chroot like a missing 2.3), so CI that is meant to have Dovecot cannot silently skip anything.
When a test fails, the logs of the instances it used are added to the report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

import pytest

from doveadm_py.testing.dovecot import BINARY_ENV, DovecotInstance
from doveadm_py.testing.imap import SessionGroup, open_sessions
from doveadm_py.testing.servers import ALL_SERVERS, DovecotServer, get_server

REQUIRE_ENV = "DVADM_REQUIRE_DOVECOT"
_INSTANCES = pytest.StashKey[list[DovecotInstance]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "dovecot(users=None, extra_conf='', server=None, **kwargs): needs a real Dovecot instance; "
        "the keyword arguments configure the `dovecot` fixture "
        f"(skips without Dovecot unless {REQUIRE_ENV}=1)",
    )


def dovecot_unavailable_reason(server: str | DovecotServer | None = None) -> str | None:
    """Why no test instance of ``server`` (default: the host's 2.3) can run here, or None if one can."""
    reason = get_server(server).unavailable_reason()
    if reason and get_server(server).root is None and os.environ.get(BINARY_ENV):
        reason += f" (${BINARY_ENV} is set)"
    return reason


def require_dovecot(server: str | DovecotServer | None = None) -> DovecotServer:
    """Skip the calling test if ``server`` is unusable, or fail it when $DVADM_REQUIRE_DOVECOT is 1."""
    reason = dovecot_unavailable_reason(server)
    if reason is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires a real Dovecot", pytrace=False)
        pytest.skip(reason)
    return get_server(server)


def dovecot_servers(*names: str) -> pytest.MarkDecorator:
    """Run a test (or, as ``pytestmark``, a module) once per server; default: every server the harness knows.

    Each server's module-scoped fixtures (``dovecot_module``, and the module's own ones using
    ``dovecot_server``) are set up once per server; test ids end in the server's name, e.g. ``[2.4-sid]``.
    The test must use ``dovecot_server`` (directly or through ``dovecot_module`` or a fixture of its own);
    ``dovecot`` and ``dovecot_factory`` follow it but do not declare it.
    """
    return pytest.mark.parametrize("dovecot_server", names or ALL_SERVERS, indirect=True, scope="module")


@pytest.fixture(scope="module")
def dovecot_server(request: pytest.FixtureRequest) -> DovecotServer:
    """The server under test: the parameter from :func:`dovecot_servers`, else the host's 2.3."""
    return require_dovecot(getattr(request, "param", None))


@pytest.fixture
def dovecot_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., DovecotInstance]]:
    """Start instances on demand: ``dovecot_factory(users=None, extra_conf="", **DovecotInstance kwargs)``.

    Without ``server=`` they are instances of the test's ``dovecot_server``.
    """
    started = request.node.stash.setdefault(_INSTANCES, [])
    mine: list[DovecotInstance] = []

    def make(users: Any = None, extra_conf: str = "", **kwargs: Any) -> DovecotInstance:
        server = kwargs.pop("server", None)
        server = require_dovecot(server) if server else request.getfixturevalue("dovecot_server")
        instance = DovecotInstance(users, extra_conf, server=server, **kwargs)
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
def dovecot_module(dovecot_server: DovecotServer) -> Iterator[DovecotInstance]:
    """One default instance for a whole test module (cheaper: each stop costs Dovecot's fixed ~1 s)."""
    with DovecotInstance(server=dovecot_server) as instance:
        yield instance


@pytest.fixture
def imap_sessions(request: pytest.FixtureRequest) -> Iterator[Callable[..., SessionGroup]]:
    """Open idle IMAP sessions: ``imap_sessions([(user, source_ip), ...], instance=None, password=None)``.

    ``port=instance.proxy_port`` logs them in through the instance's IMAP proxy.
    """
    groups: list[SessionGroup] = []

    def make(
        specs: Sequence[tuple[str, str]],
        instance: DovecotInstance | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        port: int | None = None,
    ) -> SessionGroup:
        if instance is None:
            instance = request.getfixturevalue("dovecot")
        group = open_sessions(instance, specs, password=password, timeout=timeout, port=port)
        groups.append(group)
        return group

    yield make
    for group in groups:
        group.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the Dovecot logs of the instances a failed test used: the server's view is usually the clue."""
    report = yield
    if report.failed:
        instances: list[DovecotInstance] = [*item.stash.get(_INSTANCES, [])]
        funcargs = getattr(item, "funcargs", {})
        instances += [value for value in funcargs.values() if isinstance(value, DovecotInstance)]
        for instance in dict.fromkeys(instances):  # de-duplicated, in order
            report.sections.append((f"dovecot log ({instance.work_dir or 'stopped'})", instance.log_text()))
    return report
