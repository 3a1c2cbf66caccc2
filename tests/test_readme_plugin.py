"""The plugin guide's example (docs/plugins.rst), installed with pip and tested as the guide says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from doveadm_py.testing.cli import run_dvadm

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.rst"
SECTION = GUIDE.read_text()


def code_blocks(language: str) -> list[str]:
    """The guide's ``.. code-block:: <language>`` bodies, dedented."""
    pattern = rf"\.\. code-block:: {language}\n\n((?:    .*\n|\n)+)"
    return [re.sub(r"^    ", "", block, flags=re.M).strip() + "\n" for block in re.findall(pattern, SECTION)]


@pytest.fixture
def usercount_installed(tmp_path):
    """pip install the example exactly as written in the guide; uninstall afterwards."""
    (setup_cfg,) = code_blocks("ini")
    module, _test, *_harness = code_blocks("python")
    (tmp_path / "setup.cfg").write_text(setup_cfg)
    (tmp_path / "dvadm_usercount.py").write_text(module)
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64", "wheel"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    install = subprocess.run(
        [*pip, "install", "--no-deps", "--no-build-isolation", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert install.returncode == 0, install.stderr
    yield
    subprocess.run([*pip, "uninstall", "-y", "dvadm-usercount"], capture_output=True, timeout=120)


def test_readme_plugin_example_works_as_documented(usercount_installed):
    listing = run_dvadm("help").stdout.decode()
    assert re.search(r"user count\s+Count the distinct users .*\[from dvadm-usercount\]", listing)
    _module, test_code, *_harness = code_blocks("python")
    namespace: dict[str, object] = {}
    exec(compile(test_code, "docs/plugins.rst", "exec"), namespace)
    namespace["test_user_count_both_generations"]()


def test_readme_plugin_is_gone_after_uninstall():
    assert b"user count" not in run_dvadm("help").stdout
    assert run_dvadm("user", "count").returncode == 64
