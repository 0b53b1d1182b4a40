"""CPI-FT's pieces as library functions, without any study: probes → cores → grouping → fusion → staged
training with exact freezing, on the tiny local model; and the plan's pieces against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from spillover.errors import SpilloverError
from spillover.training.cpi import (
    core_regions,
    cpi_stages,
    fuse_probes,
    model_state,
    stage_plan,
    train_from,
    train_stages,
)
from spillover.training.masks import FreezeHook, mask_size, n_selected, update_magnitudes
from spillover.training.stages import jaccard_matrix

T = torch.tensor


def test_stage_plan_by_hand():
    sim = [[1.0, 0.4, 0.0], [0.4, 1.0, 0.1], [0.0, 0.1, 1.0]]
    plan = stage_plan(sim, ["a", "b", "c"], tau=0.3, seed=0)
    assert plan.groups == [["a", "b"], ["c"]]
    # heuristic: overlap of {a, b} with c is 0.1, of {c} with a or b is 0.1 → tie, the earlier task first
    assert plan.orders["heuristic"] == [["a", "b"], ["c"]]
    assert sorted(map(tuple, plan.orders["random"])) == [("a", "b"), ("c",)]
    assert stage_plan(sim, ["a", "b", "c"], tau=0.0, seed=0).groups == [["a", "b", "c"]]
    assert stage_plan(sim, ["a", "b", "c"], tau=1.0, seed=0).groups == [["a"], ["b"], ["c"]]


def test_cpi_stages_freeze_the_earlier_cores_and_sample_each_task():
    cores = {
        "a": {"w": T([True, False, False])},
        "b": {"w": T([False, True, False])},
        "c": {"w": T([False] * 3)},
    }
    stages = cpi_stages([["a"], ["b", "c"]], cores, {"a": 10, "b": 3, "c": 8}, calibration=4, seed=1)
    assert [s.tasks for s in stages] == [["a"], ["b", "c"]]
    assert stages[0].frozen == {} and stages[1].frozen["w"].tolist() == [True, False, False]
    assert [len(i) for i in stages[0].picks] == [4] and [len(i) for i in stages[1].picks] == [3, 4]
    assert stages[1].picks[0] == [0, 1, 2]  # all of b's 3 examples, ascending
    three = cpi_stages([["a"], ["b"], ["c"]], cores, {"a": 10, "b": 3, "c": 8}, 4, 1)
    assert three[2].frozen["w"].tolist() == [True, True, False]  # cumulative: a's and b's cores


def test_fuse_probes_starts_from_the_last_probe_or_theta0():
    init, p1, p2 = {"w": T([0.0, 0.0])}, {"w": T([2.0, 2.0])}, {"w": T([4.0, 4.0])}
    none = [{"w": T([False, False])}] * 2
    fused, _ = fuse_probes(init, [p1, p2], none, "last_probe", omega=0.0, epsilon=1e-4)
    assert fused["w"].tolist() == [4.0, 4.0]  # ω = 0 keeps the start: the last probe
    fused, _ = fuse_probes(init, [p1, p2], [{"w": T([True, False])}, none[1]], "base", 0.0, 1e-4)
    assert fused["w"].tolist() == [2.0, 0.0]  # from θ0; p1's core transplanted


def test_cpi_ft_end_to_end_without_a_study(tmp_path, make_model, tokenizer, toy_sequences, make_params):
    from transformers import LlamaForCausalLM

    def clone(state):
        return {n: v.clone() for n, v in state.items()}

    init = clone(model_state(make_model()))
    data = {"a": toy_sequences[0::2], "b": toy_sequences[1::2]}  # answers " no" / " yes"
    params = make_params(max_steps=3, lr=5e-2)
    probes = {}
    for task, seqs in data.items():
        model = make_model()
        train_from(model, tokenizer, seqs, params, tmp_path / f"probe-{task}")
        probes[task] = clone(model_state(model))
        assert not (tmp_path / f"probe-{task}" / "checkpoints").exists()  # dropped once saved
    cores = core_regions({t: update_magnitudes(s, init) for t, s in probes.items()}, p=5.0)
    n = sum(v.numel() for v in init.values())
    assert all(mask_size(m) == n_selected(n, 5.0) for m in cores.values())
    sim = jaccard_matrix([cores["a"], cores["b"]])
    plan = stage_plan(sim, ["a", "b"], tau=1.0, seed=0)
    assert plan.groups == [["a"], ["b"]]
    order = [t for stage in plan.orders["heuristic"] for t in stage]
    fused, stats = fuse_probes(
        init, [probes[t] for t in order], [cores[t] for t in order], "last_probe", 0.5, 1e-4
    )
    assert stats.n_slerp + stats.n_lerp == len(init)  # one merge per tensor (towards the probes' mean)
    first = order[0]
    for name, m in cores[first].items():  # the first task's core is transplanted where no other claims it
        only = m & ~cores[order[1]][name]
        assert torch.equal(fused[name][only], probes[first][name][only])
    stages = cpi_stages(plan.orders["heuristic"], cores, {t: len(s) for t, s in data.items()}, 6, seed=0)

    def stage(k: int, start):
        s = stages[k]
        seqs = [data[t][i] for t, idx in zip(s.tasks, s.picks, strict=True) for i in idx]
        hooks = [FreezeHook(s.frozen)] if s.frozen else []
        return train_from(make_model(), tokenizer, seqs, params, tmp_path / f"stage-{k + 1}", start, hooks)

    def read(artifact):
        return clone(model_state(LlamaForCausalLM.from_pretrained(artifact)))

    results = train_stages(len(stages), stage, read, fused)
    assert [r.n_steps for r in results] == [3, 3]
    after_first, final = read(results[0].artifact), read(results[1].artifact)
    moved = False
    for name, m in cores[first].items():  # frozen in stage 2: bit for bit where stage 1 left it
        assert torch.equal(final[name][m], after_first[name][m]), name
        moved |= not torch.equal(final[name][~m], after_first[name][~m])
    assert moved  # while the rest of the model trained


def test_train_from_starts_from_the_given_state(tmp_path, make_model, tokenizer, toy_sequences, make_params):
    model = make_model()
    start = {n: torch.full_like(p, 0.01) for n, p in model_state(model).items()}
    seen = {}

    class Spy:
        def before_optimizer_step(self, model, optimizer, step):
            if step == 0:
                seen.update({n: p.detach().clone() for n, p in model.named_parameters()})

        def after_optimizer_step(self, model, optimizer, step):
            pass

    train_from(model, tokenizer, toy_sequences, make_params(max_steps=1), tmp_path / "run", start, [Spy()])
    assert all(torch.equal(seen[n], start[n]) for n in start)
    with pytest.raises(AssertionError, match="lacks"):
        train_from(
            make_model(),
            tokenizer,
            toy_sequences,
            make_params(max_steps=1),
            tmp_path / "bad",
            {"x": T([1.0])},
        )


def test_cpi_ft_refuses_lora_factors():
    """A and B of a LoRA adapter must never be cored, transplanted or SLERPed separately."""
    lora = {
        "layers.0.q_proj.lora_A.default.weight": T([1.0, 2.0]),
        "layers.0.q_proj.lora_B.default.weight": T([3.0]),
    }
    with pytest.raises(SpilloverError, match="CPI-FT needs full fine-tuning.*lora_A"):
        core_regions({"a": {n: v.abs() for n, v in lora.items()}}, p=50.0)
    with pytest.raises(SpilloverError, match="method: full"):
        fuse_probes(lora, [lora], [{}], "base", 0.5, 1e-4)
