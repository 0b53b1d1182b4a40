"""Atomic writes: complete replacement, and the temporaries of a killed writer are cleaned up."""

from __future__ import annotations

import threading
import time

import pytest

from spillover.atomic import atomic_dir, atomic_write_text, exclusive, remove_tree


def test_atomic_dir_replaces_whole_and_removes_a_killed_writers_temporaries(tmp_path):
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "old.bin").write_text("old")
    (tmp_path / ".adapter.tmp-killed").mkdir()  # left by a writer killed mid-write
    (tmp_path / ".other.tmp-keep").mkdir()  # another target's: not ours to touch
    with atomic_dir(target) as tmp:
        (tmp / "new.bin").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-keep", "adapter"]


def test_atomic_dir_leaves_the_target_alone_on_error(tmp_path):
    target = tmp_path / "tables"
    target.mkdir()
    (target / "a.csv").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.csv").write_text("half")
        raise RuntimeError("killed")
    assert (target / "a.csv").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["tables"]


def test_atomic_write_text(tmp_path):
    (tmp_path / ".report.html.tmp-killed").write_text("<ht")
    atomic_write_text(tmp_path / "report.html", "<html></html>")
    atomic_write_text(tmp_path / "report.html", "<html>2</html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert (tmp_path / "report.html").read_text() == "<html>2</html>"
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o644


def test_atomic_dir_output_is_shared_readable_and_remove_tree_leaves_no_half_deleted_folder(tmp_path):
    with atomic_dir(tmp_path / "tables") as tmp:
        (tmp / "a.csv").write_text("1")
    assert (tmp_path / "tables").stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700
    with atomic_dir(tmp_path / "tables") as tmp:  # replacing: the old folder is set aside, then removed
        (tmp / "b.csv").write_text("2")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["b.csv", "tables"]
    remove_tree(tmp_path / "tables")
    assert list(tmp_path.iterdir()) == []


def test_exclusive_makes_writers_of_shared_outputs_take_turns(tmp_path):
    """Two writers (threads here; processes alike: each opens the lock file itself) never overlap."""
    events: list[str] = []

    def writer(name: str) -> None:
        with exclusive(tmp_path / ".outputs.lock"):
            events.append(f"{name} in")
            time.sleep(0.2)
            events.append(f"{name} out")

    threads = [threading.Thread(target=writer, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert events in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"]), events
