"""Controls applied to a source dataset before fine-tuning (methods §1.5): mislabel, rebalance, subsample;
and `target_field` (train on another field as the target: the tradeoff study's label-only format).

Each transform is a pure function `(examples, ..., seed=0) -> list[Example]` registered under a short
name; a study lists them as specs `{"name": "mislabel", "fraction": 0.5}`. `describe(specs)` gives the
stable label used in transfer-matrix row names ("sst2+mislabel(fraction=1.0)").

Up-sampling (rebalance to a larger share, subsample with replace=True) keeps every original row once
before drawing extra copies with replacement, and gives each copy a distinct id (`"<id>~<k>"`) so
downstream code keyed by id (demo exclusion, caches) never confuses them.
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Annotated, Any

from pydantic import Field

from spillover.data.tasks import Example, as_text
from spillover.errors import SpilloverError, unknown_name_message
from spillover.registry import Registry, check_params

# seeds also reach numpy (dataset statistics sample with them), whose range is [0, 2**32 - 1]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]

Transform = Callable[..., list[Example]]
TRANSFORMS: Registry[Transform] = Registry("transform")


def _relabel(example: Example, new: int) -> Example:
    """`example` with gold option `new`; the target follows in the form it had (text, letter or index)."""
    assert example.options is not None and example.gold is not None
    old, options = example.gold, example.options
    forms = {options[old]: options[new], chr(65 + old): chr(65 + new), str(old): str(new)}
    if example.target not in forms:
        raise SpilloverError(
            f"mislabel: example '{example.id}' has target {example.target!r}, which is neither its gold "
            "option, its letter nor its index"
        )
    row = {**example.row, "_orig_target": example.target, "_orig_gold": old}
    return replace(example, target=forms[example.target], gold=new, row=row)


@TRANSFORMS.register("mislabel")
def mislabel(examples: Sequence[Example], fraction: float = 1.0, seed: Seed = 0) -> list[Example]:
    """Give round(fraction · n) of the labelled examples a wrong label, uniform among the wrong ones.

    Only examples with `options` (classification / multiple choice) are eligible; the others pass
    through unchanged. The original target and gold index are kept in `row["_orig_target"/"_orig_gold"]`.
    """
    if not 0.0 <= fraction <= 1.0:
        raise SpilloverError(f"mislabel: fraction must be in [0, 1], got {fraction}")
    eligible = [i for i, e in enumerate(examples) if e.options and len(e.options) >= 2 and e.gold is not None]
    if not eligible:
        raise SpilloverError(
            "mislabel needs a classification or multiple-choice task (examples with options)"
        )
    rng = random.Random(seed)
    chosen = rng.sample(eligible, math.floor(fraction * len(eligible) + 0.5))
    out = list(examples)
    for i in sorted(chosen):
        e = out[i]
        wrong = [k for k in range(len(e.options)) if k != e.gold]
        out[i] = _relabel(e, rng.choice(wrong))
    return out


def _with_copies(pool: Sequence[Example], n: int, rng: random.Random) -> list[Example]:
    """n rows from pool: without replacement when n <= len(pool), else all rows + extra copies."""
    if n <= len(pool):
        return rng.sample(list(pool), n)
    extra = [replace(e, id=f"{e.id}~{k}") for k, e in enumerate(rng.choices(list(pool), k=n - len(pool)), 1)]
    return [*pool, *extra]


def _allocate(weights: Mapping[str, float], size: int) -> dict[str, int]:
    """Integer counts summing to `size`, proportional to weights (largest remainder, ties by order)."""
    total = sum(weights.values())
    exact = {k: size * w / total for k, w in weights.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    order = sorted(exact, key=lambda k: -(exact[k] - counts[k]))
    for k in order[: size - sum(counts.values())]:
        counts[k] += 1
    return counts


@TRANSFORMS.register("rebalance")
def rebalance(
    examples: Sequence[Example],
    distribution: Mapping[str, float] | str = "uniform",
    seed: Seed = 0,
    size: int | None = None,
) -> list[Example]:
    """Resample to a target label distribution (labels = targets), result size `size` or len(examples).

    `distribution` is {label: weight} (renormalised; missing labels get 0) or "uniform" over the labels
    present. Counts are exact (largest-remainder rounding); the result is shuffled with the seed.
    """
    if any(not e.options for e in examples):
        raise SpilloverError("rebalance needs a classification task (every example with options)")
    groups: dict[str, list[Example]] = {}
    for e in examples:
        groups.setdefault(e.target, []).append(e)
    weights = _target_weights(distribution, groups)
    size = len(examples) if size is None else size
    if size < 1:
        raise SpilloverError(f"rebalance: size must be >= 1, got {size}")
    rng = random.Random(seed)
    out: list[Example] = []
    for label, n in _allocate(weights, size).items():
        if n and label not in groups:
            raise SpilloverError(f"rebalance: label '{label}' has no examples to sample from")
        out += _with_copies(groups.get(label, []), n, rng)
    rng.shuffle(out)
    return out


def _target_weights(distribution: Mapping[str, float] | str, groups: Mapping[str, Any]) -> dict[str, float]:
    if distribution == "uniform":
        return {label: 1.0 for label in groups}
    if not isinstance(distribution, Mapping):
        raise SpilloverError(
            f"rebalance: distribution must be 'uniform' or {{label: weight}}, got {distribution!r}"
        )
    labels = sorted({lab for e in groups.values() for lab in (e[0].options or ())} | set(groups))
    for label, w in distribution.items():
        if label not in labels:
            raise SpilloverError(unknown_name_message("label", label, labels))
        if not isinstance(w, int | float) or w < 0:
            raise SpilloverError(f"rebalance: weight of '{label}' must be a number >= 0, got {w!r}")
    if sum(distribution.values()) <= 0:
        raise SpilloverError("rebalance: the weights must not all be 0")
    return {label: float(w) for label, w in distribution.items()}


@TRANSFORMS.register("subsample")
def subsample(examples: Sequence[Example], n: int, seed: Seed = 0, replace: bool = False) -> list[Example]:
    """A seeded sample of exactly n examples, in their original order when n <= len(examples).

    n > len(examples) is an error unless replace=True, which keeps every example and adds copies.
    """
    if not isinstance(n, int) or n < 1:
        raise SpilloverError(f"subsample: n must be an integer >= 1, got {n!r}")
    if n > len(examples) and not replace:
        raise SpilloverError(
            f"subsample: n={n} is more than the {len(examples)} examples available (set replace: true)"
        )
    rng = random.Random(seed)
    if n <= len(examples):
        keep = sorted(rng.sample(range(len(examples)), n))
        return [examples[i] for i in keep]
    return _with_copies(examples, n, rng)


@TRANSFORMS.register("target_field")
def target_field(examples: Sequence[Example], field: str) -> list[Example]:
    """Train on another field of each row as the target, e.g. gsm8k's bare `answer` instead of its worked
    solution (the tradeoff study's `label_only` supervision format, methods.md §4.2)."""
    out = []
    for e in examples:
        if e.row.get(field) is None:
            raise SpilloverError(
                f"target_field: example '{e.id}' has no field '{field}'; it has: {', '.join(sorted(e.row))}"
            )
        out.append(replace(e, target=as_text(e.row[field])))
    return out


def _params(name: str) -> dict[str, inspect.Parameter]:
    """The parameters a transform takes besides the examples."""
    return dict(list(inspect.signature(TRANSFORMS.get(name)).parameters.items())[1:])


def _check(spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise SpilloverError(
            f"a transform spec needs a `name` (one of {', '.join(TRANSFORMS)}), got {spec!r}"
        )
    name, params = spec["name"], {k: v for k, v in spec.items() if k != "name"}
    check_params("transform", name, TRANSFORMS.get(name), params, skip=1)
    return name, params


def check_transforms(specs: Sequence[Mapping[str, Any]]) -> None:
    """Validate transform specs (names, parameter names and types) without applying them."""
    if not isinstance(specs, Sequence) or isinstance(specs, str):
        raise SpilloverError(f"transforms must be a list of {{name: ..., ...}} specs, got {specs!r}")
    for spec in specs:
        _check(spec)


def apply_transforms(examples: Sequence[Example], specs: Sequence[Mapping[str, Any]]) -> list[Example]:
    """Apply `specs` in order; every spec is validated before any is applied."""
    checked = [_check(spec) for spec in specs]
    out = list(examples)
    for name, params in checked:
        out = TRANSFORMS.get(name)(out, **params)
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_fmt(value[k])}" for k in sorted(value)) + "}"
    return str(value)


def describe(specs: Sequence[Mapping[str, Any]]) -> str:
    """A stable label: "mislabel(fraction=1.0)+subsample(n=100, seed=3)".

    Parameters appear in signature order; the first one always, the others only when not at default.
    """
    parts = []
    for spec in specs:
        name, params = _check(spec)
        shown = []
        for i, (key, p) in enumerate(_params(name).items()):
            value = params.get(key, p.default)
            if isinstance(p.default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if i == 0 or key in params and value != p.default:
                shown.append(f"{key}={_fmt(value)}")
        parts.append(f"{name}({', '.join(shown)})")
    return "+".join(parts)
