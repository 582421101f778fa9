"""`armor --help` and every stage's `--help` say what each flag does and its default, and parse
without importing the heavy libraries a stage only needs when it runs."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.__main__ import STAGES, build_parser

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "pandas", "ray", "mlflow", "matplotlib", "faiss", "implicit", "sklearn", "sentence_transformers")


def options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from options(sub, (*path, name))
        elif action.option_strings and not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield " ".join(path), action


def test_every_flag_says_what_it_does_and_its_default():
    missing = []
    for stage, action in options(build_parser()):
        flag = f"armor {stage} {'/'.join(action.option_strings)}"
        text = action.help or ""
        if not text.strip():
            missing.append(f"{flag}: no help")
        elif (action.default is not None and type(action.default) is not bool and not action.required
              and not isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._CountAction))
              and "default" not in text):
            missing.append(f"{flag}: no default in {text!r}")
    assert not missing, "\n".join(missing)


def test_a_switch_that_turns_something_off_says_so():
    for stage, action in options(build_parser()):
        if isinstance(action, argparse._StoreFalseAction):
            assert action.option_strings[0].startswith("--no-") and "turns it off" in action.help, (stage, action.help)


@pytest.mark.parametrize("stage", ["", *STAGES])
def test_help_imports_no_heavy_library(stage):
    code = ("import sys\nfrom pipelines.__main__ import main\n"
            f"try:\n    main({[stage, '--help'] if stage else ['--help']!r})\nexcept SystemExit:\n    pass\n"
            f"loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)\nassert not loaded, loaded\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
