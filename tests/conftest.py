"""Shared fixtures: a tiny Llama and a byte-level tokenizer built locally (no download), tiny task files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_tokenizer():
    """Byte-level BPE with no merges: every byte is a token, plus chat special tokens. Deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.add_special_tokens({"eos_token": "<|im_end|>", "bos_token": "<|im_start|>", "pad_token": "<|pad|>"})
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "right"
    return fast


def make_tiny_llama(vocab_size: int, seed: int = 0, hidden: int = 48, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture()
def tiny_model(tokenizer):
    return make_tiny_llama(len(tokenizer))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A saved tiny Llama + tokenizer folder: loadable by name like any local checkpoint."""
    path = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_llama(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_jsonl(path: Path, rows: list[dict], *, ensure_ascii: bool = True) -> Path:
    """`ensure_ascii=False` writes non-ASCII characters (e.g. raw U+2028) as they are."""
    path.write_text("".join(json.dumps(r, ensure_ascii=ensure_ascii) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def sentiment_task_file(tmp_path):
    """A two-label classification task with 16 train and 8 test rows in a user task file."""
    words = {"positive": ["great", "lovely", "superb", "fine"], "negative": ["awful", "bad", "dull", "poor"]}
    rows = [
        {"id": f"r{i}", "text": f"a {words[lab][i % 4]} film", "label": lab}
        for i, lab in enumerate(["positive", "negative"] * 12)
    ]
    write_jsonl(tmp_path / "train.jsonl", rows[:16])
    write_jsonl(tmp_path / "test.jsonl", rows[16:])
    (tmp_path / "tasks.yaml").write_text(
        "tasks:\n"
        "  - name: toy_sentiment\n"
        "    type: classification\n"
        "    train: train.jsonl\n"
        "    test: test.jsonl\n"
        "    input: 'Review: {text}'\n"
        "    target: label\n"
        "    labels: [negative, positive]\n"
        "    metric: accuracy\n"
        "    instruction: Is the review negative or positive?\n"
    )
    return tmp_path / "tasks.yaml"
