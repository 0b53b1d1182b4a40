"""The attention kernel is transformers' `attn_implementation`, chosen once at load time: `sdpa` by
default, `eager` on request; both read spillover's packed 4-D masks and give the same training logits."""

from __future__ import annotations

import torch

from spillover.data.collate import IGNORE, Sequence_, pad_batch
from spillover.models.load import Precision, load_model
from spillover.training.loop import _forward_fn
from spillover.training.types import TrainParams

FP32 = Precision(torch.device("cpu"), torch.float32)


def test_load_time_choice_gives_the_same_training_logits(tiny_model_dir, tokenizer):
    head = tokenizer("<|im_start|>system\nBe brief.<|im_end|>\n", add_special_tokens=False)["input_ids"]
    seqs = [Sequence_(head + list(range(1, 12 + i)), len(head) + 4) for i in range(8)]
    batch = pad_batch(seqs, 0)
    out = {}
    for impl in ("sdpa", "eager"):
        model, _ = load_model(str(tiny_model_dir), FP32, attn_implementation=impl)
        for share in (False, True):  # padded rows, and packed rows with their 4-D mask
            logits, labels = _forward_fn(model, TrainParams(precision=FP32), share_prefix=share)(batch)
            real = (labels != IGNORE).roll(-1, dims=1)  # positions whose logits predict a target
            out[impl, share] = logits[real]
    for key, logits in out.items():
        torch.testing.assert_close(logits, out["sdpa", False], rtol=1e-4, atol=1e-4, msg=str(key))
