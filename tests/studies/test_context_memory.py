"""StudyContext's memory design: θ0 by name is a view that holds no tensor, so the shared base can be set
aside (`release_base`, as full fine-tuning does while its copy trains) while lazy states built on θ0 stay
usable; they read the same values once the base is loaded again."""

from __future__ import annotations

import gc
import platform
import weakref

import psutil
import pytest
import torch

from spillover.config import StudySpec
from spillover.engine.store import Store
from spillover.memory import cap_heap_blocks, release_free_memory
from spillover.models.deltas import DeltaState, compact_model_dir
from spillover.studies.context import StudyContext


def test_base_state_is_a_view_and_the_base_can_be_set_aside(tmp_path, tiny_model_dir):
    spec = StudySpec(study="transfer", model=str(tiny_model_dir), output_dir=str(tmp_path), precision="fp32")
    ctx = StudyContext(spec, {}, Store(tmp_path))
    names = [n for n, _ in ctx.base_model().named_parameters()]
    theta0 = {n: p.detach().clone() for n, p in ctx.base_model().named_parameters()}
    view = ctx.base_state()
    assert list(view) == names and len(view) == len(names) and "lm_head.nope" not in view
    assert all(torch.equal(view[n], theta0[n]) for n in names)
    # a fine-tune stored as a delta, read lazily on θ0 through the view
    tuned = ctx.full_model(tiny_model_dir)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.01)
    tuned.save_pretrained(tmp_path / "model")
    compact_model_dir(tmp_path / "model", view)
    state = DeltaState(tmp_path / "model", ctx.base_state())
    before = {n: state[n] for n in names}
    held = weakref.ref(ctx.base_model().get_parameter(names[0]))
    ctx.release_base()
    gc.collect()
    assert held() is None  # nothing kept the set-aside base alive, not even `state` or `view`
    assert all(torch.equal(state[n], before[n]) for n in names)  # the base is loaded again on access
    assert all(torch.equal(view[n], theta0[n]) for n in names)


def test_cap_heap_blocks_is_idempotent():
    assert cap_heap_blocks() == cap_heap_blocks()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_release_free_memory_returns_freed_heap_pages():
    """200 MB of 2 KB blocks with one block in 16 kept: the freed pages sit between live blocks, so glibc's
    automatic trimming at the top of the heap cannot return them; `release_free_memory` does."""
    proc = psutil.Process()
    blocks = [bytearray(2048) for _ in range(100_000)]
    kept = blocks[::16]
    del blocks
    before = proc.memory_info().rss
    assert release_free_memory()
    assert before - proc.memory_info().rss > 100e6
    assert len(kept) == 6250
