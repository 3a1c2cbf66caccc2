"""dvadm-proxy is built only on dvadm's public API: every dvadm import is from ``doveadm_py.api``
and names one of its stable names (``api.__all__``, documented in docs/plugins.rst)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import doveadm_py.api as api

PACKAGE = Path(__file__).resolve().parent.parent / "dvadm_proxy"


def dvadm_imports() -> list[tuple[str, str, str | None]]:
    """(file, module, name) of every import of doveadm_py (name None for ``import x``)."""
    found: list[tuple[str, str, str | None]] = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [
                    (path.name, a.name, None) for a in node.names if a.name.split(".")[0] == "doveadm_py"
                ]
            elif (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").startswith("doveadm_py")
            ):
                found += [(path.name, str(node.module), a.name) for a in node.names]
    return found


def test_only_the_public_api_is_imported() -> None:
    imports = dvadm_imports()
    assert imports, "the scan found no dvadm import at all"
    assert [i for i in imports if i[1] != "doveadm_py.api" or i[2] not in api.__all__] == []


def test_documented_names() -> None:
    """The names the plugin uses are on docs/plugins.rst's list of the public API."""
    docs = (PACKAGE.parent.parent.parent / "docs" / "plugins.rst").read_text()
    assert [name for _, _, name in dvadm_imports() if not re.search(rf"``{name}[`(]", docs)] == []
