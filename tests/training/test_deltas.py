"""Full fine-tunes stored as bf16 deltas (models.deltas): θ read back within bf16 rounding of the *update*
(not of θ), the folder's other files kept, about half the bytes, and nothing changed by a second compaction."""

from __future__ import annotations

import torch
from tests.conftest import make_tiny_llama

from spillover.models.deltas import DELTA_FILE, DeltaState, compact_model_dir, is_delta_dir, load_delta_into_


def _fine_tuned(tokenizer, scale: float = 1e-4):
    """θ0 and a model whose every parameter moved by a small update (|Δ| ≪ 2⁻⁹|θ|, lost in bf16 weights)."""
    base, tuned = make_tiny_llama(len(tokenizer)), make_tiny_llama(len(tokenizer))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(scale * torch.randn_like(p))
    return base, tuned


def test_a_delta_folder_reads_back_theta_within_bf16_rounding_of_the_update(tmp_path, tokenizer):
    base, tuned = _fine_tuned(tokenizer)
    tuned.save_pretrained(tmp_path / "model")
    full_bytes = sum(f.stat().st_size for f in (tmp_path / "model").iterdir())
    theta0 = dict(base.named_parameters())
    compact_model_dir(tmp_path / "model", theta0)
    assert is_delta_dir(tmp_path / "model") and (tmp_path / "model" / "config.json").exists()
    assert not (tmp_path / "model" / "model.safetensors").exists()
    assert (tmp_path / "model" / DELTA_FILE).stat().st_size < 0.6 * full_bytes
    state = DeltaState(tmp_path / "model", theta0)
    for name, p in tuned.named_parameters():
        update = p.detach() - theta0[name].detach()
        error = (state[name] - p.detach()).abs()
        assert torch.all(error <= update.abs() * 2**-8 + 1e-12), name
        # bf16 *weights* would have lost the update: rounding θ moves it by more than the update itself
        assert (p.detach().bfloat16().float() - p.detach()).abs().max() > 2 * error.max()
    loaded = load_delta_into_(make_tiny_llama(len(tokenizer)), tmp_path / "model")
    for (name, a), (_, b) in zip(loaded.named_parameters(), tuned.named_parameters(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), name


def test_compacting_twice_changes_nothing(tmp_path, tokenizer):
    base, tuned = _fine_tuned(tokenizer)
    tuned.save_pretrained(tmp_path / "model")
    theta0 = dict(base.named_parameters())
    compact_model_dir(tmp_path / "model", theta0)
    before = (tmp_path / "model" / DELTA_FILE).read_bytes()
    compact_model_dir(tmp_path / "model", theta0)
    assert (tmp_path / "model" / DELTA_FILE).read_bytes() == before


def test_file_state_reads_a_saved_state_back_exactly(tmp_path, tokenizer):
    from safetensors.torch import save_file

    from spillover.models.deltas import FileState

    state = {n: p.detach() * 1.000001 for n, p in make_tiny_llama(len(tokenizer)).named_parameters()}
    save_file(state, str(tmp_path / "s.safetensors"))
    back = FileState(tmp_path / "s.safetensors")
    assert set(back) == set(state) and len(back) == len(state) and "nope" not in back
    assert all(torch.equal(back[n], v) for n, v in state.items())  # fp32, bit for bit
