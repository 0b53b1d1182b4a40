"""Hostile and careless data (issue #28, data paths): each case was a crash, a hang or a leak on 1f0f1ec.
Every one must end in one clear exit-2 message before any model work, with nothing written."""

from __future__ import annotations

import json
import time

import pytest
from tests.bad_input.conftest import expect_rejected, jsonl_rows, read_yaml, to_csv, write_yaml

from spillover.data.sources import MAX_FIELD_CHARS
from spillover.yamlio import MAX_EXPANDED_NODES

BOMB = """
a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
"""


def _study(folder, capsys, *needles):
    return expect_rejected(["run", str(folder / "study.yaml")], folder / "out", capsys, *needles)


def test_a_yaml_alias_bomb_is_refused_without_expanding_it(base_dir, capsys):
    """Was: 51-64 s, 2.9 GB and a MemoryError traceback (the error message expanded the aliases)."""
    folder = base_dir()
    study = folder / "study.yaml"
    text = study.read_text()
    study.write_text(BOMB + "\n".join(line for line in text.splitlines() if not line.startswith("targets:")))
    study.write_text(study.read_text() + "\ntargets: *h\n")
    start = time.monotonic()
    _study(folder, capsys, "study.yaml", "expand to more than", f"{MAX_EXPANDED_NODES:,}")
    assert time.monotonic() - start < 20


def test_a_large_aliased_value_in_a_typed_field_is_quoted_short(base_dir, capsys):
    """Under the expansion limit, a bad aliased value is still quoted in a few characters, not expanded."""
    folder = base_dir()
    study = folder / "study.yaml"
    lines = [line for line in study.read_text().splitlines() if not line.startswith("seed:")]
    study.write_text("\n".join(BOMB.splitlines()[:5]) + "\n" + "\n".join(lines) + "\nseed: *d\n")
    _study(folder, capsys, "seed = [[[")


def test_a_field_over_the_size_limit_is_named_with_file_and_line(base_dir, capsys):
    """Was: a 50 MB JSONL line was accepted; tokenisation grew to 6.6 GB and aborted (exit 134)."""
    folder = base_dir()
    rows = jsonl_rows(folder / "a_train.jsonl")
    rows[2]["input"] = "x" * (MAX_FIELD_CHARS + 1)
    (folder / "a_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _study(folder, capsys, "a_train.jsonl:3", "field 'input'", f"{MAX_FIELD_CHARS:,}")


def test_a_nul_byte_in_a_csv_file_is_refused(base_dir, capsys):
    """Was: accepted (Python's csv module reads NUL as a character since 3.11)."""
    folder = base_dir()
    path = to_csv(folder, "a_train")
    header, first, *rest = path.read_text().splitlines(keepends=True)
    path.write_text(header + first.replace(",", ",\0", 1) + "".join(rest))
    _study(folder, capsys, "a_train.csv:2", "NUL byte")


def test_error_messages_do_not_quote_rows_of_a_linked_data_file(base_dir, capsys, tmp_path):
    """Was: a data file linked to /etc/shadow printed its first line in the error message."""
    secret = tmp_path / "secret.csv"
    secret.write_text("root:SECRET-HASH:19000:0:99999:7:::\nline two\n")
    folder = base_dir()
    to_csv(folder, "a_train")
    (folder / "a_train.csv").unlink()
    (folder / "a_train.csv").symlink_to(secret)
    err = _study(folder, capsys, "a_train.csv")
    assert "SECRET-HASH" not in err and "root:" not in err


def test_a_linked_data_file_with_good_rows_is_allowed(base_dir, tmp_path):
    from spillover.data.tasks import load_examples, load_task_file

    folder = base_dir()
    real = tmp_path / "elsewhere.jsonl"
    real.write_text((folder / "a_train.jsonl").read_text())
    (folder / "a_train.jsonl").unlink()
    (folder / "a_train.jsonl").symlink_to(real)
    task = load_task_file(folder / "tasks.yaml")["toy_a"]
    assert len(load_examples(task, "train")) == len(jsonl_rows(real))


@pytest.mark.parametrize("name", [".", ".."])
def test_task_names_that_are_path_steps_are_refused(base_dir, capsys, name):
    """Was: accepted; `.` and `..` vanished from the mixture study's results with exit 0."""
    folder = base_dir()
    tasks = read_yaml(folder / "tasks.yaml")
    tasks["tasks"][0]["name"] = name
    write_yaml(folder / "tasks.yaml", tasks)
    spec = read_yaml(folder / "study.yaml")
    spec["sources"] = [name]
    spec["targets"] = [name, "toy_b"]
    write_yaml(folder / "study.yaml", spec)
    _study(folder, capsys, "tasks.yaml", repr(name))


def test_more_labels_than_allowed_are_refused(base_dir, capsys):
    """Was: 20,002 labels accepted; evaluation then tried to allocate 95 GB after training had run."""
    from spillover.data.tasks import MAX_LABELS

    folder = base_dir()
    tasks = read_yaml(folder / "tasks.yaml")
    tasks["tasks"][0]["labels"] = ["negative", "positive", *(f"l{i}" for i in range(MAX_LABELS))]
    write_yaml(folder / "tasks.yaml", tasks)
    _study(folder, capsys, "tasks.yaml", "labels", f"at most {MAX_LABELS}")
