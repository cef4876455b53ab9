"""`pip install relay` alone must be enough to run it: every third-party module that relay/
imports belongs to a distribution listed in [project] dependencies (not only in the test
extras, which a production install does not have)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imported_top_levels() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "relay").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"relay", "__future__"}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_runtime_import_is_a_declared_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        _normalize(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in project["dependencies"]
    }
    owners = packages_distributions()
    missing = {}
    for module in _imported_top_levels():
        dists = {_normalize(d) for d in owners.get(module, [module])}
        if not dists & declared:
            missing[module] = sorted(dists)
    # uvloop is optional: relay uses it when installed (uvicorn[standard] brings it).
    missing.pop("uvloop", None)
    assert missing == {}
