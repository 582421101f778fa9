"""The library stays importable without Ray, and imports have no side effects."""

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import armor

ROOT = Path(armor.__file__).resolve().parent.parent


def all_armor_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(armor.__path__, prefix="armor."))


def test_every_armor_module_imports_without_ray(tmp_path):
    modules = all_armor_modules()
    assert "armor.eval.metrics" in modules and "armor.data.splits" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        "assert not leaked, leaked\n"
    )
    # Run from an empty directory: importing must not create files or directories.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env)
    assert list(tmp_path.iterdir()) == []


def test_cli_help_imports_no_ray():
    code = ("import sys\nfrom pipelines.__main__ import build_parser\nbuild_parser()\n"
            "assert 'ray' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
