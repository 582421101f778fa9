"""Every third-party package the library and the pipelines import is declared in pyproject.toml,
not merely installed because something else depends on it (a package that arrives through
another one can leave with that one's next release)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"armor", "pipelines", "__future__"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    """Every pinned requirement in pyproject.toml (all of them are pinned; tomllib needs Python 3.11)."""
    text = (ROOT / "pyproject.toml").read_text()
    return {normalise(name) for name in re.findall(r'"([A-Za-z0-9][A-Za-z0-9_.-]*)(?:\[[^\]]*\])?==[^"]+"', text)}


def imported() -> dict[str, str]:
    """Top-level module imported -> the first file that imports it, over armor/ and pipelines/."""
    found: dict[str, str] = {}
    for path in sorted([*ROOT.joinpath("armor").rglob("*.py"), *ROOT.joinpath("pipelines").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared():
    distributions = importlib.metadata.packages_distributions()
    wanted = declared()
    undeclared = []
    for module, where in sorted(imported().items()):
        providers = {normalise(d) for d in distributions.get(module, [])}
        if not providers & wanted:
            undeclared.append(f"{module} (imported by {where}; installed as {sorted(providers) or 'nothing'})")
    assert not undeclared, "declare these in pyproject.toml [project] dependencies:\n" + "\n".join(undeclared)
