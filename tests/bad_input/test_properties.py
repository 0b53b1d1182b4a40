"""Property tests: malformed study specs, training configs, task specs and data files, each derived from a
valid base by one mutation, must all end the same way through the real CLI — exit code 2, one `error:`
line on stderr naming the file/field and the bad value, no traceback, no model loaded, nothing written.

Every example builds a fresh toy study (tests/studies/conftest.py) in its own folder, so the output folder
of a failed command can be checked for absence (or, when it pre-existed, for being unchanged). The shared
bases and `expect_rejected` are in conftest.py; one focused test per bug these found is in
test_regressions.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.bad_input.conftest import (
    SETTINGS,
    TRAIN_KEYS,
    expect_rejected,
    jsonl_rows,
    read_yaml,
    snapshot,
    to_csv,
    train_config,
    write_yaml,
)

pytestmark = pytest.mark.integration

# ---- bad values ------------------------------------------------------------------------------------------

NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
NOT_A_NUMBER = st.one_of(
    st.text(alphabet="abcxyz", min_size=1, max_size=6),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.just("k"), st.integers(), max_size=1),
)
NEG_INT = st.integers(max_value=0)
FRACTIONAL = st.floats(0.01, 0.99).map(lambda x: round(x + 3, 2))  # 3.01 .. 3.99: not an integer


def unknown_name(known) -> st.SearchStrategy[str]:
    return st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(
        lambda s: s not in set(known)
    )


# (path into the YAML, strategy of bad values) — one field at a time
BAD_TRAIN_FIELDS: list[tuple[tuple[str, ...], st.SearchStrategy]] = [
    (
        ("learning_rate",),
        st.one_of(NON_FINITE, st.floats(max_value=0), st.floats(min_value=1.01), NOT_A_NUMBER),
    ),
    (("batch_size",), st.one_of(NEG_INT, FRACTIONAL, NON_FINITE, NOT_A_NUMBER)),
    (("epochs",), st.one_of(NEG_INT, FRACTIONAL, NOT_A_NUMBER)),
    (("max_steps",), st.one_of(NEG_INT, FRACTIONAL, NOT_A_NUMBER)),
    (("grad_accum",), st.one_of(NEG_INT, NOT_A_NUMBER)),
    (("limit",), st.one_of(NEG_INT, FRACTIONAL, NOT_A_NUMBER)),
    (("max_len",), st.one_of(st.integers(max_value=7), st.integers(min_value=32769), NOT_A_NUMBER)),
    (("shots",), st.one_of(st.integers(max_value=-1), st.integers(min_value=33), NOT_A_NUMBER)),
    (("warmup_ratio",), st.one_of(st.floats(max_value=-0.01), st.floats(min_value=1.01), NON_FINITE)),
    (("weight_decay",), st.one_of(st.floats(max_value=-1e-6), NON_FINITE, NOT_A_NUMBER)),
    (("max_grad_norm",), st.one_of(st.floats(max_value=0), NON_FINITE, NOT_A_NUMBER)),
    (("seed",), st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32), FRACTIONAL, NOT_A_NUMBER)),
    (("method",), unknown_name(["lora", "full"])),
    (("schedule",), unknown_name(["cosine", "constant"])),
    (("lora", "r"), st.one_of(NEG_INT, st.integers(min_value=1025), NOT_A_NUMBER)),
    (("lora", "alpha"), st.one_of(st.floats(max_value=0), NON_FINITE)),
    (("lora", "dropout"), st.one_of(st.floats(max_value=-0.01), st.floats(min_value=1), NON_FINITE)),
    (("lora", "target_modules"), st.one_of(st.just([]), st.just(""), st.integers())),
    (("objective",), unknown_name(["cross_entropy"])),
    (("objective_params",), st.dictionaries(unknown_name([]), st.integers(), min_size=1, max_size=2)),
    (("regularizers",), st.dictionaries(unknown_name(["l2_to_init"]), st.just({}), min_size=1, max_size=1)),
    (
        ("regularizers", "l2_to_init"),
        st.one_of(
            st.just({}),
            st.dictionaries(unknown_name(["weight"]), st.integers(), min_size=1, max_size=1),
            st.fixed_dictionaries(
                {"weight": st.one_of(st.floats(max_value=-1e-6), NON_FINITE, NOT_A_NUMBER)}
            ),
        ),
    ),
    (("checkpoint_every",), NEG_INT),
    (("log_every",), NEG_INT),
    (("compile",), st.one_of(unknown_name(["auto"]), st.integers(min_value=2), NON_FINITE)),
]

BAD_STUDY_FIELDS: list[tuple[tuple[str, ...], st.SearchStrategy]] = [
    *[(("train", *path), bad) for path, bad in BAD_TRAIN_FIELDS],
    (("study",), st.one_of(unknown_name(["transfer"]), st.integers(), st.lists(st.integers(), max_size=2))),
    (("model",), st.builds(lambda s: f"/no/such/model-{s}", unknown_name([]))),
    (
        ("tasks_file",),
        st.one_of(
            st.integers(),
            st.lists(st.integers(), min_size=1, max_size=2),
            st.builds(lambda s: f"missing-{s}.yaml", unknown_name([])),
        ),
    ),
    (("output_dir",), st.one_of(st.just(""), st.lists(st.integers(), max_size=2), st.just({"a": 1}))),
    (("precision",), unknown_name(["auto", "bf16", "fp32"])),
    (("device",), unknown_name(["auto", "cpu", "cuda", "mps"])),
    (("seed",), st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32), NOT_A_NUMBER)),
    (
        ("report_to",),
        st.one_of(st.lists(unknown_name(["tensorboard", "mlflow"]), min_size=1, max_size=2), st.integers()),
    ),
    (
        ("sources",),
        st.one_of(
            st.just([]),
            st.integers(),
            st.lists(unknown_name(["toy_a", "toy_b", "toy_gen"]), min_size=1, max_size=2),
            st.just(["toy_a", "toy_a"]),
            st.just([{"task": "toy_a", "label": "a+b"}]),
            st.just([{"task": "toy_a", "transforms": "mislabel"}]),
            st.lists(unknown_name(["mislabel", "rebalance", "subsample"]), min_size=1, max_size=1).map(
                lambda names: [{"task": "toy_a", "transforms": [{"name": n} for n in names]}]
            ),
            st.sampled_from(
                [[1], [["x"]], [{"x": 1}], [{}], [None], [{"name": None}], [{"name": ["mislabel"]}]]
            ).map(lambda t: [{"task": "toy_a", "transforms": t}]),
            st.one_of(NON_FINITE, st.floats(min_value=1.01), st.floats(max_value=-0.01), NOT_A_NUMBER).map(
                lambda f: [{"task": "toy_a", "transforms": [{"name": "mislabel", "fraction": f}]}]
            ),
            st.one_of(NEG_INT, NOT_A_NUMBER, st.integers(min_value=25)).map(
                lambda n: [{"task": "toy_a", "transforms": [{"name": "subsample", "n": n}]}]
            ),
            st.one_of(NEG_INT, NOT_A_NUMBER).map(
                lambda n: [{"task": "toy_a", "transforms": [{"name": "rebalance", "size": n}]}]
            ),
            st.one_of(
                unknown_name([]),
                st.integers(),
                st.just({"negative": -1}),
                st.just({"nope": 1}),
                st.just({"negative": math.nan}),
                st.just({"negative": 0}),
            ).map(lambda d: [{"task": "toy_a", "transforms": [{"name": "rebalance", "distribution": d}]}]),
            st.one_of(NOT_A_NUMBER, st.integers(max_value=-1)).map(
                lambda s: [{"task": "toy_a", "transforms": [{"name": "mislabel", "seed": s}]}]
            ),
            st.just([{"task": "toy_gen", "transforms": [{"name": "mislabel"}]}]),
        ),
    ),
    (
        ("targets",),
        st.one_of(
            st.just([]),
            st.integers(),
            st.just(["toy_a", "toy_a"]),
            st.lists(unknown_name(["toy_a", "toy_b", "toy_gen"]), min_size=1, max_size=2),
        ),
    ),
    (("eval", "limit"), st.one_of(NEG_INT, NOT_A_NUMBER)),
    (("eval", "batch_size"), st.one_of(NEG_INT, NON_FINITE)),
    (("eval", "shots"), st.one_of(st.integers(max_value=-1), st.integers(min_value=33))),
    (("eval", "seed"), st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32))),
    (("eval", "compile"), st.one_of(unknown_name(["auto"]), st.integers(min_value=2), NON_FINITE)),
    (("analysis", "n_boot"), st.one_of(st.integers(max_value=9), NOT_A_NUMBER)),
    (("analysis", "n_components"), NEG_INT),
    (("analysis", "component_labels"), st.one_of(st.integers(), st.just({"PC1": [1]}))),
    (("stats", "sample"), st.integers(max_value=7)),
]

BAD_CONFIG_FIELDS: list[tuple[tuple[str, ...], st.SearchStrategy]] = [
    *BAD_TRAIN_FIELDS,
    (("model",), st.builds(lambda s: f"/no/such/model-{s}", unknown_name([]))),
    (
        ("tasks",),
        st.one_of(st.just([]), st.integers(), st.lists(unknown_name(["toy_a"]), min_size=1, max_size=2)),
    ),
    (("eval_tasks",), st.one_of(st.integers(), st.lists(unknown_name(["toy_b"]), min_size=1, max_size=2))),
    (("tasks_file",), st.one_of(st.integers(), st.builds(lambda s: f"/no/such/{s}.yaml", unknown_name([])))),
    (("eval_limit",), NEG_INT),
    (("eval_shots",), st.one_of(st.integers(max_value=-1), st.integers(min_value=33))),
    (("precision",), unknown_name(["auto", "bf16", "fp32"])),
    (("device",), unknown_name(["auto", "cpu", "cuda", "mps"])),
    (("output_dir",), st.one_of(st.just(""), st.lists(st.integers(), max_size=2))),
    (("report_to",), st.lists(unknown_name(["tensorboard", "mlflow"]), min_size=1, max_size=2)),
]


def set_path(data: dict, path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        data = data.setdefault(part, {})
    data[path[-1]] = value


@st.composite
def field_mutation(draw, table):
    path, bad = draw(st.sampled_from(table))
    return path, draw(bad)


def _needle(path: tuple[str, ...], value: Any) -> tuple[str, ...]:
    """What the message must name: the field (for regularizer/transform settings, their section), or the
    bad name itself (an unknown task in a list is reported when the list is resolved)."""
    section = next((p for p in path if p in ("sources", "regularizers", "objective_params")), path[-1])
    names = [str(v) for v in value] if isinstance(value, list) and value else [str(value)]
    return (section, *names)


# ---- study specs -----------------------------------------------------------------------------------------


def test_the_bases_are_valid(base_dir, tiny_model_dir):
    """The mutations below start from inputs that pass validation (so each failure is the mutation's)."""
    from spillover.config import TrainSpec, load_spec
    from spillover.studies.run import load_study, prepare

    folder = base_dir()
    prepare(*load_study(folder / "study.yaml"))
    load_spec(TrainSpec, train_config(folder, str(tiny_model_dir)))


@SETTINGS
@given(mutation=field_mutation(BAD_STUDY_FIELDS), pre_existing=st.booleans())
def test_study_with_one_bad_field_is_rejected(base_dir, capsys, mutation, pre_existing):
    path, value = mutation
    folder = base_dir()
    spec = read_yaml(folder / "study.yaml")
    set_path(spec, path, value)
    write_yaml(folder / "study.yaml", spec)
    out = folder / "out"
    if pre_existing:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    expect_rejected(
        ["run", str(folder / "study.yaml")], out, capsys, _needle(path, value), before=snapshot(out)
    )


def all_study_keys() -> set[str]:
    from spillover.config import EvalSettings, LoraSpec, TrainSettings
    from spillover.studies.specs import StatsSettings
    from spillover.studies.transfer.spec import TransferAnalysisSpec, TransferStudySpec

    models = (TransferStudySpec, TrainSettings, LoraSpec, EvalSettings, TransferAnalysisSpec, StatsSettings)
    return {key for model in models for key in model.model_fields}


@SETTINGS
@given(
    key=st.sampled_from(["output_dir", "sources", "targets", "study"]),
    section=st.sampled_from([(), ("train",), ("train", "lora"), ("eval",), ("analysis",), ("stats",)]),
    unknown=st.deferred(lambda: unknown_name(all_study_keys())),
)
def test_study_missing_key_or_unknown_key_is_rejected(base_dir, capsys, key, section, unknown):
    folder = base_dir()
    spec = read_yaml(folder / "study.yaml")
    del spec[key]
    write_yaml(folder / "study.yaml", spec)
    expect_rejected(["run", str(folder / "study.yaml")], folder / "out", capsys, "study.yaml", key)
    folder = base_dir()
    spec = read_yaml(folder / "study.yaml")
    set_path(spec, (*section, unknown), 1)
    write_yaml(folder / "study.yaml", spec)
    expect_rejected(["run", str(folder / "study.yaml")], folder / "out", capsys, "study.yaml", "unknown key")


@SETTINGS
@given(
    top=st.one_of(st.lists(st.integers(), min_size=1, max_size=3), st.integers(), st.text("abc", min_size=1))
)
def test_yaml_that_is_not_a_mapping_is_rejected(base_dir, capsys, top):
    folder = base_dir()
    write_yaml(folder / "study.yaml", top)
    expect_rejected(["run", str(folder / "study.yaml")], folder / "out", capsys, "study.yaml", "mapping")


@SETTINGS
@given(key=st.sampled_from(["model", "output_dir", "precision", "sources", "targets", "train"]))
def test_duplicate_yaml_keys_are_rejected(base_dir, capsys, key):
    folder = base_dir()
    text = (folder / "study.yaml").read_text()
    line = next(line for line in text.splitlines() if line.startswith(f"{key}:"))
    (folder / "study.yaml").write_text(text + line + "\n")
    expect_rejected(
        ["run", str(folder / "study.yaml")], folder / "out", capsys, "study.yaml", f"'{key}'", "twice"
    )


@SETTINGS
@given(data=st.data())
def test_corrupt_or_truncated_study_file_is_rejected(base_dir, capsys, data):
    folder = base_dir()
    raw = (folder / "study.yaml").read_bytes()
    cut = raw.index(b"\ntargets:")  # everything before the required `targets:` line
    how = data.draw(st.sampled_from(["truncate", "bad_utf8", "empty", "unbalanced"]))
    if how == "truncate":
        raw = raw[: data.draw(st.integers(0, cut))]
    elif how == "bad_utf8":
        at = data.draw(st.integers(0, len(raw)))
        raw = (
            raw[:at] + data.draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\x80\x80"])) + raw[at:]
        )
    elif how == "empty":
        raw = data.draw(st.sampled_from([b"", b"\n\n", b"# only a comment\n"]))
    else:
        raw = raw.replace(b"targets: [", b"targets: [[", 1)
    (folder / "study.yaml").write_bytes(raw)
    expect_rejected(["run", str(folder / "study.yaml")], folder / "out", capsys, "study.yaml")


# ---- training configs ------------------------------------------------------------------------------------


@SETTINGS
@given(mutation=field_mutation(BAD_CONFIG_FIELDS))
def test_train_config_with_one_bad_field_is_rejected(base_dir, tiny_model_dir, capsys, mutation):
    path, value = mutation
    folder = base_dir()
    cfg = train_config(folder, str(tiny_model_dir))
    data = read_yaml(cfg)
    set_path(data, path, value)
    write_yaml(cfg, data)
    expect_rejected(["train", str(cfg)], folder / "out", capsys, _needle(path, value))


@SETTINGS
@given(key=st.sampled_from(TRAIN_KEYS), raw=st.sampled_from(["-1", ".nan", "-.inf", "abc", "[1", "{}", "0"]))
def test_train_override_with_bad_value_is_rejected(base_dir, tiny_model_dir, capsys, key, raw):
    folder = base_dir()
    cfg = train_config(folder, str(tiny_model_dir))
    if raw == "0" and key in ("shots", "warmup_ratio"):
        raw = "-1"  # 0 is allowed there
    expect_rejected(["train", str(cfg), f"{key}={raw}"], folder / "out", capsys, key)


# ---- task specs ------------------------------------------------------------------------------------------

BAD_TASK_FIELDS: list[tuple[str, st.SearchStrategy]] = [
    ("name", st.one_of(st.just(""), st.text(alphabet=" /<>!?:", min_size=1, max_size=4), st.integers())),
    ("type", unknown_name(["classification", "multiple_choice", "generation"])),
    ("metric", unknown_name(["accuracy", "exact_match", "rouge_l", "pass_at_1", "acc"])),
    (
        "labels",
        st.one_of(
            st.just([]),
            st.just(["negative", "negative"]),
            st.lists(st.integers(), min_size=1),
            st.just("negative"),
            st.just([["negative"]]),
        ),
    ),
    ("input", st.sampled_from(["{input", "{input} {", "{input}}", "}{", "{0}", "{input!z}", "{input:>>>}"])),
    ("max_new_tokens", st.one_of(NEG_INT, st.integers(min_value=4097), NOT_A_NUMBER)),
    ("extract", unknown_name(["none", "last_number", "first_line", "code"])),
    (
        "train",
        st.one_of(
            st.builds(lambda s: f"{s}.jsonl", unknown_name([])),
            st.just("a_train.txt"),
            st.just("."),
            st.integers(),
        ),
    ),
    ("test", st.one_of(st.builds(lambda s: f"{s}.csv", unknown_name([])), st.just(""), st.just("a_test"))),
    ("stop", st.one_of(st.just("x"), st.just([1]))),
    ("chat_template", st.sampled_from(["maybe", [True], 2])),
]


@SETTINGS
@given(field=st.sampled_from(BAD_TASK_FIELDS).flatmap(lambda fb: st.tuples(st.just(fb[0]), fb[1])))
def test_task_spec_with_one_bad_field_is_rejected(base_dir, capsys, field):
    key, value = field
    folder = base_dir()
    tasks = read_yaml(folder / "tasks.yaml")
    tasks["tasks"][0][key] = value  # toy_a: a source and a target of the study
    write_yaml(folder / "tasks.yaml", tasks)
    expect_rejected(["run", str(folder / "study.yaml")], folder / "out", capsys)
    cfg = train_config(folder, "unused")
    write_yaml(cfg, {**read_yaml(cfg), "eval_tasks": ["toy_a"]})  # toy_a's train and test splits are used
    err = expect_rejected(["train", str(cfg)], folder / "out", capsys)
    assert any(s in err for s in ("tasks.yaml", "a_train", "a_test", "toy_a", str(value))), err


@SETTINGS
@given(
    how=st.sampled_from(["no_list", "not_mapping", "missing", "unknown", "duplicate_name", "foreign_labels"]),
    data=st.data(),
)
def test_task_file_structure_problems_are_rejected(base_dir, capsys, how, data):
    folder = base_dir()
    tasks = read_yaml(folder / "tasks.yaml")
    entry = tasks["tasks"][0]
    needle = "tasks.yaml"
    if how == "no_list":
        tasks = data.draw(st.sampled_from([{"tasks": entry}, {"task": [entry]}, [entry], {"tasks": None}]))
    elif how == "not_mapping":
        tasks["tasks"][0] = data.draw(st.sampled_from(["toy_a", 3, [entry], None]))
    elif how == "missing":
        needle = data.draw(st.sampled_from(["name", "type", "test", "metric"]))
        del entry[needle]
    elif how == "unknown":
        needle = data.draw(unknown_name(list(entry) + ["input", "target", "choices", "stop"]))
        entry[needle] = "x"
    elif how == "duplicate_name":
        tasks["tasks"][1]["name"] = "toy_a"
        needle = "defined twice"
    else:  # the data's labels are not the task's labels
        entry["labels"] = data.draw(
            st.lists(unknown_name(["negative", "positive"]), min_size=2, max_size=3, unique=True)
        )
        needle = "is not one of the task's labels"
    write_yaml(folder / "tasks.yaml", tasks)
    expect_rejected(["run", str(folder / "study.yaml")], folder / "out", capsys, needle)


# ---- data files ------------------------------------------------------------------------------------------

DATA_FILES = ["a_train.jsonl", "a_test.jsonl", "b_train.jsonl", "g_test.jsonl"]


def _corrupt_jsonl(draw, path: Path) -> str:
    """Corrupt one data file in place; returns a string the message must contain."""
    raw = path.read_bytes()
    rows = jsonl_rows(path)
    how = draw(
        st.sampled_from(
            [
                "empty",
                "bad_utf8",
                "truncate",
                "not_object",
                "missing_field",
                "null_field",
                "foreign_label",
                "huge_bad_line",
                "bad_json",
            ]
        )
    )
    if how == "empty":
        path.write_bytes(draw(st.sampled_from([b"", b"\n", b"  \n\n"])))
        return "empty"
    if how == "bad_utf8":
        at = draw(st.integers(0, len(raw)))
        path.write_bytes(
            raw[:at] + draw(st.sampled_from([b"\xff", b"\xfe\xfe", b"\xc0\xaf", b"\xed\xa0\x80"])) + raw[at:]
        )
        return "UTF-8"
    if how == "truncate":  # cut inside a line (not at a line end, which would just drop rows)
        ends = {i for i, b in enumerate(raw) if b == 10} | {len(raw)}
        at = draw(st.integers(1, len(raw) - 1).filter(lambda i: i not in ends and i - 1 not in ends))
        path.write_bytes(raw[:at])
        return "invalid JSON"
    i = draw(st.integers(0, 5))  # a row the study reads (train.limit 16, eval.limit 6)
    line = f"{path}:{i + 1}"
    if how == "not_object":
        rows[i] = draw(st.sampled_from([[1, 2], "text", 3, None, True]))
    elif how == "missing_field":
        del rows[i][draw(st.sampled_from(["input", "output"]))]
    elif how == "null_field":
        rows[i][draw(st.sampled_from(["input", "output"]))] = None
    elif how == "foreign_label":
        if not path.name.startswith(("a_", "b_")):
            rows[i]["input"] = None
        else:
            rows[i]["output"] = draw(
                st.one_of(
                    unknown_name(["negative", "positive", "sport", "money"]),
                    st.integers(),
                    st.just(math.nan),
                    st.lists(st.integers(), max_size=1),
                )
            )
    if how in ("huge_bad_line", "bad_json"):
        big = "x" * draw(st.sampled_from([10, 200_000, 3_000_000]))
        lines = [json.dumps(r) for r in rows]
        lines[i] = '{"input": "' + big + '", "output": }' if how == "huge_bad_line" else lines[i][:-1] + ",}"
        path.write_text("\n".join(lines) + "\n")
        return line
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return line


@SETTINGS
@given(data=st.data())
def test_corrupt_jsonl_data_is_rejected(base_dir, capsys, data):
    folder = base_dir()
    path = folder / data.draw(st.sampled_from(DATA_FILES))
    needle = _corrupt_jsonl(data.draw, path)
    expect_rejected(["run", str(folder / "study.yaml")], folder / "out", capsys, path.name, needle)


@SETTINGS
@given(
    how=st.sampled_from(
        [
            "huge_field",
            "bad_utf8",
            "header_only",
            "missing_column",
            "foreign_label",
            "empty",
            "unclosed_quote",
        ]
    ),
    data=st.data(),
)
def test_corrupt_csv_data_is_rejected(base_dir, capsys, how, data):
    folder = base_dir()
    path = to_csv(folder, "a_train")
    text = path.read_text()
    header, first, *rest = text.splitlines(keepends=True)
    if how == "huge_field":
        text = (
            header
            + f'a1,"{"y" * data.draw(st.sampled_from([200_000, 2_000_000]))}",positive\n'
            + "".join(rest)
        )
    elif how == "bad_utf8":
        path.write_bytes(header.encode() + b"a1,\xff\xfe,positive\n" + "".join(rest).encode())
    elif how == "header_only":
        text = header
    elif how == "missing_column":
        text = "id,text,output\n" + first + "".join(rest)
    elif how == "foreign_label":
        text = (
            header
            + first.rsplit(",", 1)[0]
            + f",{data.draw(unknown_name(['negative', 'positive']))}\n"
            + "".join(rest)
        )
    elif how == "empty":
        text = ""
    else:
        text = header + 'a1,"never closed,positive\n' + "".join(rest)
    if how != "bad_utf8":
        path.write_text(text, encoding="utf-8")
    expect_rejected(["run", str(folder / "study.yaml")], folder / "out", capsys, path.name)


@SETTINGS
@given(how=st.sampled_from(["flip", "truncate", "empty", "jsonl_bytes"]), data=st.data())
def test_corrupt_parquet_data_is_rejected(base_dir, capsys, how, data):
    import pandas as pd

    folder = base_dir()
    path = folder / "a_test.parquet"
    pd.DataFrame(jsonl_rows(folder / "a_test.jsonl")).to_parquet(path)
    (folder / "tasks.yaml").write_text((folder / "tasks.yaml").read_text().replace("a_test.jsonl", path.name))
    raw = path.read_bytes()
    if how == "flip":  # the footer magic/length: unreadable
        at = data.draw(st.integers(len(raw) - 8, len(raw) - 1))
        raw = raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1 :]
    elif how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif how == "empty":
        raw = b""
    else:
        raw = (folder / "a_test.jsonl").read_bytes()
    path.write_bytes(raw)
    expect_rejected(["run", str(folder / "study.yaml")], folder / "out", capsys, path.name)
