"""The plugin guide's example (docs/plugins.rst), installed with pip and tested as the guide says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from doveadm_py.testing.cli import run_dvadm
from doveadm_py.testing.venv import ThrowawayEnv

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.rst"
SECTION = GUIDE.read_text()


def code_blocks(language: str) -> list[str]:
    """The guide's ``.. code-block:: <language>`` bodies, dedented."""
    pattern = rf"\.\. code-block:: {language}\n\n((?:    .*\n|\n)+)"
    return [re.sub(r"^    ", "", block, flags=re.M).strip() + "\n" for block in re.findall(pattern, SECTION)]


@pytest.fixture
def usercount_source(tmp_path: Path) -> Path:
    """The example's files exactly as written in the guide."""
    (setup_cfg,) = code_blocks("ini")
    module, _test, *_harness = code_blocks("python")
    source = tmp_path / "dvadm-usercount"
    source.mkdir()
    (source / "setup.cfg").write_text(setup_cfg)
    (source / "dvadm_usercount.py").write_text(module)
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64", "wheel"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    return source


def test_readme_plugin_example_works_as_documented(usercount_source: Path, tmp_path: Path) -> None:
    """pip install (into a throwaway venv), listed and working as the guide says; pip uninstall removes it."""
    env = ThrowawayEnv(tmp_path / "env")
    env.install(usercount_source)
    with env.activated():
        listing = run_dvadm("help").stdout.decode()
        assert re.search(r"user count\s+Count the distinct users .*\[from dvadm-usercount\]", listing)
        _module, test_code, *_harness = code_blocks("python")
        namespace: dict[str, object] = {}
        exec(compile(test_code, "docs/plugins.rst", "exec"), namespace)
        namespace["test_user_count_both_generations"]()
        env.uninstall("dvadm-usercount")
        assert b"user count" not in run_dvadm("help").stdout
        assert run_dvadm("user", "count").returncode == 64
    assert b"user count" not in run_dvadm("help").stdout  # never installed where the tests run
