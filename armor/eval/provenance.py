"""What produced a report, written beside it as provenance.json: the report's configuration, the
demo or benchmark job when the caller knows it, the command line, the package versions, the git
commit of the code (and whether its tree had uncommitted changes), the machine, and a digest of
each split scored. Every part is best effort: a missing git, package or split leaves a null and a
reason, never a failed report.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROVENANCE_FILE = "provenance.json"
# Distribution names; faiss ships as faiss-cpu or faiss-gpu (the same module), whichever is installed.
PACKAGES = ("torch", "ray", "mlflow", "numpy", ("faiss-cpu", "faiss-gpu", "faiss"), "implicit",
            "sentence-transformers", "pyarrow", "scipy", "pandas", "scikit-learn", "matplotlib")
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the checkout this code runs from


def package_versions() -> dict[str, str | None]:
    """Python's version and each package's installed version (None when it is not installed); read
    from the installed metadata, so nothing is imported (armor never imports Ray)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for entry in PACKAGES:
        names = entry if isinstance(entry, tuple) else (entry,)
        found = None
        for name in names:
            try:
                found = importlib.metadata.version(name)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        versions[names[-1] if isinstance(entry, tuple) else entry] = found
    return versions


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                          timeout=20).stdout.strip()


def git_state(root: Path = SOURCE_ROOT) -> dict[str, Any]:
    """The commit checked out at ``root`` and whether tracked or untracked files differ from it; nulls
    and the reason when git is missing or ``root`` is not a repository."""
    try:
        commit = _git(root, "rev-parse", "HEAD")
        changes = _git(root, "status", "--porcelain", "--untracked-files=normal").splitlines()
    except FileNotFoundError:
        return {"commit": None, "dirty": None, "error": "git is not installed"}
    except subprocess.CalledProcessError as exc:
        return {"commit": None, "dirty": None, "error": (exc.stderr or str(exc)).strip()[:300]}
    except (subprocess.TimeoutExpired, OSError) as exc:
        return {"commit": None, "dirty": None, "error": str(exc)[:300]}
    return {"commit": commit, "dirty": bool(changes), "changed_files": len(changes)}


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def provenance(config: Any, workspace: Path, job: Any = None, splits: Mapping[str, str] | None = None,
               root: Path = SOURCE_ROOT) -> dict[str, Any]:
    """The provenance record (see the module docstring); ``job`` is the demo or benchmark job (a
    dataclass or mapping) when the caller has one, ``splits`` each scored split's digest."""
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "workspace": str(Path(workspace).resolve()),
        "report_config": _jsonable(config),
        "job": _jsonable(job),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "git": git_state(root),
        "packages": package_versions(),
        "platform": {"system": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "splits": dict(splits or {}),
    }


def provenance_line(record: Mapping[str, Any]) -> str:
    """The report's pointer to provenance.json, with the commit at a glance."""
    git = record.get("git") or {}
    commit = git.get("commit")
    state = (f"git commit `{commit[:12]}`" + (" with uncommitted changes" if git.get("dirty") else "")
             if commit else f"git commit unknown ({git.get('error', 'no git')})")
    return (f"\n**Reproducibility**: the report's configuration, the job and command that produced it, package "
            f"versions and the code's {state} are in [{PROVENANCE_FILE}]({PROVENANCE_FILE}).\n")
