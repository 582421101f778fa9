"""Atomic writes: durable before they are visible, and a replaced directory never goes missing."""

import os
import sys
import threading
from pathlib import Path

import pytest

from armor import io as armor_io
from armor.io import atomic_path, exchange, write_text

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd; renameat2")


@pytest.fixture
def fsynced(monkeypatch):
    """The paths fsync is called on, in order."""
    seen: list[Path] = []
    real = os.fsync

    def recording(fd):
        seen.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        return real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return seen


@linux_only
def test_a_file_reaches_the_disk_before_its_rename_and_the_rename_after(tmp_path, fsynced):
    target = tmp_path / "out" / "summary.json"
    write_text("{}", target)
    assert target.read_text() == "{}"
    # First the data, under its temporary name; then the directory that now names it.
    assert len(fsynced) == 2, fsynced
    assert fsynced[0].parent == target.parent and fsynced[0].name.startswith(".summary.json.")
    assert fsynced[1] == target.parent


@linux_only
def test_every_file_and_directory_of_a_new_directory_is_flushed(tmp_path, fsynced):
    target = tmp_path / "model"
    with atomic_path(target) as tmp:
        (tmp / "weights").mkdir(parents=True)
        (tmp / "weights" / "a.npy").write_bytes(b"a")
        (tmp / "params.json").write_text("{}")
    names = {p.name for p in fsynced}
    assert {"a.npy", "params.json", "weights"} <= names
    assert fsynced[-1] == tmp_path and sorted(p.name for p in target.rglob("*")) == ["a.npy", "params.json",
                                                                                      "weights"]


def exchange_works_here(directory: Path) -> bool:
    a, b = directory / "probe-a", directory / "probe-b"
    a.mkdir()
    b.mkdir()
    try:
        return exchange(a, b)
    finally:
        a.rmdir()
        b.rmdir()


@linux_only
def test_replacing_a_directory_never_leaves_the_path_missing(tmp_path, monkeypatch):
    if not exchange_works_here(tmp_path):
        pytest.skip("this file system has no renameat2 RENAME_EXCHANGE: the two-rename fallback applies")
    target = tmp_path / "split"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "version").write_text("1")
    missing_after = []
    for name in ("rename", "replace"):
        real = getattr(os, name)

        def checking(src, dst, *args, _real=real, **kwargs):
            _real(src, dst, *args, **kwargs)
            missing_after.append(not target.exists())

        monkeypatch.setattr(os, name, checking)
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "version").write_text("2")
    assert True not in missing_after  # renaming the old directory aside left no directory until the next rename
    assert (target / "version").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"]  # neither the old one nor a temporary is left


@linux_only
def test_a_reader_always_finds_a_complete_directory(tmp_path):
    if not exchange_works_here(tmp_path):
        pytest.skip("this file system has no renameat2 RENAME_EXCHANGE")
    target = tmp_path / "features"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "version").write_text("0")
    done, problems = threading.Event(), []

    def read():
        while not done.is_set():
            try:
                if (target / "version").read_text() not in {str(i) for i in range(40)}:
                    problems.append("torn")
            except FileNotFoundError as exc:
                problems.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for version in range(1, 40):
            with atomic_path(target) as tmp:
                tmp.mkdir()
                (tmp / "version").write_text(str(version))
    finally:
        done.set()
        reader.join()
    assert problems == []
    assert (target / "version").read_text() == "39"


def test_without_the_exchange_the_old_directory_is_still_replaced(tmp_path, monkeypatch):
    monkeypatch.setattr(armor_io, "exchange", lambda a, b: False)  # another OS or file system
    target = tmp_path / "split"
    for version in ("1", "2"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "version").write_text(version)
    assert (target / "version").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"]


def test_a_failed_block_changes_nothing(tmp_path):
    target = tmp_path / "out.txt"
    write_text("old", target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
