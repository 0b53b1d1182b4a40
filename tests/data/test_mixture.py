"""Mixture maths: strategy weights and schedules by hand, and the sampler's realised frequencies against the
configured ratios with a chi-square test (20 000 steps: a 2-point error in one ratio is rejected)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from spillover.data.mixture import MixtureSettings, Schedule, allocate, run_length, strategy_weights
from spillover.errors import SpilloverError
from spillover.training.mixture_plan import MixturePlan

N_STEPS = 20_000
ALPHA = 1e-4  # a correct sampler fails this with probability 1e-4; fixed seeds make the test deterministic


def test_strategy_weights_by_hand():
    np.testing.assert_allclose(strategy_weights("proportional", [100, 400]), [0.2, 0.8])
    np.testing.assert_allclose(strategy_weights("equal", [100, 400]), [0.5, 0.5])
    np.testing.assert_allclose(
        strategy_weights("temperature", [100, 400], 2.0), [1 / 3, 2 / 3]
    )  # √100 : √400
    np.testing.assert_allclose(strategy_weights("temperature", [100, 400], 1.0), [0.2, 0.8])


def test_schedule_phases_linear_and_mean_by_hand():
    ph = Schedule("phases", ((0.5, 0.5), (0.9, 0.1)), (0.7, 1.0))
    assert [ph.at(s, 10)[0] for s in range(10)] == [0.5] * 7 + [0.9] * 3  # first 70% of 10 steps = steps 0..6
    np.testing.assert_allclose(ph.mean(), [0.7 * 0.5 + 0.3 * 0.9, 0.7 * 0.5 + 0.3 * 0.1])
    lin = Schedule("linear", ((1.0, 0.0), (0.0, 1.0)))
    np.testing.assert_allclose(lin.at(0, 5), [1, 0])
    np.testing.assert_allclose(lin.at(2, 5), [0.5, 0.5])
    np.testing.assert_allclose(lin.at(4, 5), [0, 1])
    np.testing.assert_allclose(lin.mean(), [0.5, 0.5])


def _task_of_each_step(counts: np.ndarray) -> np.ndarray:
    assert (counts.sum(axis=1) == counts.max(axis=1)).all()  # step sampling: one task per step
    return counts.argmax(axis=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_step_sampling_frequencies_match_ratios_chi_square(seed):
    ratios = np.array([0.6, 0.3, 0.1])
    tasks = _task_of_each_step(allocate(np.tile(ratios, (N_STEPS, 1)), 8, "step", seed))
    observed = np.bincount(tasks, minlength=3)
    assert chisquare(observed, ratios * N_STEPS).pvalue > ALPHA
    # the test has power: ratios off by 2 points are rejected at the same level
    assert chisquare(observed, np.array([0.58, 0.32, 0.1]) * N_STEPS).pvalue < ALPHA


def test_step_sampling_follows_each_schedule_phase():
    sched = Schedule("phases", ((1 / 3, 1 / 3, 1 / 3), (0.6, 0.3, 0.1)), (0.7, 1.0))
    tasks = _task_of_each_step(allocate(sched.table(N_STEPS), 4, "step", seed=7))
    cut = int(0.7 * N_STEPS)
    for part, expected in ((tasks[:cut], sched.vectors[0]), (tasks[cut:], sched.vectors[1])):
        observed = np.bincount(part, minlength=3)
        assert chisquare(observed, np.asarray(expected) * len(part)).pvalue > ALPHA
    last = np.bincount(tasks[cut:], minlength=3)
    assert chisquare(last, np.asarray(sched.vectors[0]) * last.sum()).pvalue < ALPHA  # phases really differ


def test_linear_schedule_sampling_tracks_the_interpolation():
    sched = Schedule("linear", ((0.9, 0.1), (0.1, 0.9)))
    tasks = _task_of_each_step(allocate(sched.table(N_STEPS), 1, "step", seed=3))
    for lo, hi in ((0, 2000), (9000, 11000), (18000, 20000)):  # windows where the ratio is nearly flat
        expected = sched.table(N_STEPS)[lo:hi].sum(axis=0)
        observed = np.bincount(tasks[lo:hi], minlength=2)
        assert chisquare(observed, expected).pvalue > ALPHA


def test_batch_mixing_keeps_every_running_total_within_one_sequence():
    sched = Schedule("phases", ((0.5, 0.3, 0.2), (0.05, 0.15, 0.8), (0.0, 0.5, 0.5)), (0.3, 0.6, 1.0))
    table = sched.table(3000)
    counts = allocate(table, 7, "batch", seed=0)
    assert (counts.sum(axis=1) == 7).all() and (counts >= 0).all()
    err = np.cumsum(counts, axis=0) - np.cumsum(table * 7, axis=0)
    assert np.abs(err).max() < 1.0 + 1e-9
    np.testing.assert_array_equal(allocate(np.array([[0.5, 0.25, 0.25]]), 4, "batch", 0), [[2, 1, 1]])


def _plan(seed, sampling="step", sizes=(5, 40, 12), n_steps=200):
    lengths = list(range(sum(sizes)))
    sched = Schedule("constant", ((0.5, 0.3, 0.2),))
    return MixturePlan(
        ["a", "b", "c"],
        sizes,
        lengths,
        sched,
        batch_size=2,
        grad_accum=2,
        seed=seed,
        n_steps=n_steps,
        sampling=sampling,
    )


@pytest.mark.parametrize("sampling", ["step", "batch"])
def test_same_seed_same_order_different_seed_differs(sampling):
    order = lambda p: [p.micro_batches(s) for s in range(p.n_steps)]  # noqa: E731
    assert order(_plan(0, sampling)) == order(_plan(0, sampling))
    assert order(_plan(0, sampling)) != order(_plan(1, sampling))
    plan = _plan(0, sampling)
    assert plan.micro_batches(150) == _plan(0, sampling).micro_batches(
        150
    )  # a step alone: pure in (seed, step)


def test_upsampling_walks_whole_epochs_and_counts_them():
    plan = _plan(0, "batch")  # task a: 5 sequences, half of 800 slots -> 80 epochs
    drawn = [i for s in range(plan.n_steps) for i in plan.step_indices(s) if i < 5]
    assert len(drawn) == 400
    for e in range(80):  # every epoch of task a is a permutation of its 5 sequences
        assert sorted(drawn[5 * e : 5 * e + 5]) == [0, 1, 2, 3, 4]
    summary = {r["task"]: r for r in plan.summary()}
    assert summary["a"]["epochs"] == 80 and summary["a"]["realised_fraction"] == 0.5
    assert plan.step_stats(plan.n_steps - 1)["epochs/a"] == 80
    mbs = plan.micro_batches(3)
    assert len(mbs) == 2 and all(len(m) == 2 for m in mbs)
    assert [plan.lengths[i] for m in mbs for i in m] == sorted(plan.lengths[i] for m in mbs for i in m)


def test_run_length_stop_rules_by_hand():
    sched = Schedule("constant", ((0.5, 0.5),))
    assert run_length(sched, [10, 30], slots=4, epochs=1, stop="total") == 10
    assert run_length(sched, [10, 30], slots=4, epochs=1, stop="first_exhausted") == 5  # 10 / 0.5 = 20 seqs
    assert run_length(sched, [10, 30], slots=4, epochs=2, stop="all_exhausted") == 30  # 2 · 30 / 0.5 / 4


def test_settings_aliases_and_schedules():
    m = MixtureSettings.model_validate({"mix_strategy": "interleave_under", "interleave_probs": [3, 1]})
    assert (m.strategy, m.sampling, m.stop) == ("ratios", "step", "first_exhausted")
    assert m.to_schedule(["x", "y"], [1, 1]).vectors == ((0.75, 0.25),)
    m = MixtureSettings.model_validate({"mix_strategy": "concat"})
    assert (m.strategy, m.sampling) == ("proportional", "batch")
    assert m.to_schedule(["x", "y"], [10, 30]).vectors == ((0.25, 0.75),)
    m = MixtureSettings.model_validate(
        {
            "schedule": {
                "phases": [{"until": 0.5, "ratios": {"x": 1, "y": 1}}, {"until": 1.0, "ratios": [0, 2]}]
            }
        }
    )
    assert m.to_schedule(["x", "y"], [1, 1]) == Schedule("phases", ((0.5, 0.5), (0.0, 1.0)), (0.5, 1.0))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"strategy": "ratios"}, "strategy: ratios needs `ratios`"),
        ({"ratios": [1, 1], "interleave_probs": [1, 1]}, "not both"),
        ({"strategy": "equal", "ratios": [1, 1]}, "`ratios` needs strategy: ratios"),
        ({"strategy": "equal", "schedule": {"linear": {"start": [1, 0], "end": [0, 1]}}}, "not both"),
        ({"schedule": {"phases": [{"until": 0.7, "ratios": [1, 1]}]}}, "the last must be 1.0"),
        ({"schedule": {}}, "exactly one of `phases` or `linear`"),
        ({"mix_strategy": "interleave_sideways"}, "mix_strategy 'interleave_sideways' is not one of"),
        ({"sampling": "example"}, "sampling"),
    ],
)
def test_bad_settings_are_rejected(data, message):
    with pytest.raises(ValueError, match=message):
        MixtureSettings.model_validate(data)


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ({"x": 1, "z": 1}, r"unknown: \['z'\], missing: \['y'\]"),
        ([1, 1, 1], "3 ratios for 2 tasks"),
        ([0, 0], "positive sum"),
        ([1, -1], "≥ 0"),
    ],
)
def test_ratios_must_fit_the_training_tasks(ratios, message):
    m = MixtureSettings(ratios=ratios)
    with pytest.raises(SpilloverError, match=message):
        m.to_schedule(["x", "y"], [1, 1])
