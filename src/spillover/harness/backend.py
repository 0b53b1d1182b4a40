"""spillover's scorer as an lm-evaluation-harness model: `lm_eval --model spillover --model_args
pretrained=embedded,adapter=PATH --tasks ...`, or `SpilloverLM.from_model(model, tokenizer)` in-process.

lm-eval renders every prompt, few-shot block and target; this class only answers its requests, the way
lm-eval's `hf` model does, through spillover's own code:

- `loglikelihood` (lm-eval's `TemplateLM` tokenises each (context, continuation) pair as `hf` does:
  trailing context whitespace moves into the continuation, the pair is encoded whole and split):
  requests with the same context tokens (a multiple-choice question's options) become one packed row,
  scored in one forward pass by `evaluation.scoring.score_requests`.
- `generate_until`: greedy decoding by `evaluation.generation.generate`, stopping at lm-eval's `until`
  strings, the EOS token or `max_gen_toks`; the text is cut with lm-eval's own post-processing.
- `loglikelihood_rolling`: lm-eval's rolling token windows, each scored as one continuation.

Tokenisation follows `hf` (`add_bos_token` as there: the tokenizer's default unless given). No chat
template is applied unless lm-eval asks for one (`--apply_chat_template`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from spillover.errors import SpilloverError
from spillover.evaluation.evaluate import _inference
from spillover.evaluation.generation import eos_ids, generate
from spillover.evaluation.scoring import score_requests
from spillover.models.load import Precision

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 16
MAX_GEN_TOKS = 256  # lm-eval's `hf` default when a task sets no max_gen_toks
DEFAULT_MAX_LENGTH = 2048  # lm-eval's `hf` default when the model config names none


@register_model("spillover")
class SpilloverLM(TemplateLM):
    """An lm-eval model answering requests with spillover's scorer and greedy decoder.

    `pretrained`: `embedded`, a Hugging Face id or a local folder (as `spillover eval --model`);
    `adapter`: a saved PEFT adapter folder; `precision`: auto | bf16 | fp32; `compile`: true runs the
    log-likelihood forward passes through torch.compile. `batch_size`, `device` and `max_length` come
    from lm-eval's options (`auto` batch sizes use spillover's default, 16)."""

    def __init__(
        self,
        pretrained: str = "embedded",
        adapter: str | None = None,
        precision: str = "auto",
        batch_size: int | str = DEFAULT_BATCH_SIZE,
        device: str | None = None,
        max_length: int | None = None,
        add_bos_token: bool | None = None,
        compile: bool = False,
        **unused: Any,
    ) -> None:
        from spillover.models.adapters import load_adapter
        from spillover.models.load import load_model, resolve_precision

        if unused:
            log.warning("spillover model: ignoring model_args %s", ", ".join(sorted(unused)))
        prec = resolve_precision(str(precision), _device(device))
        model, tokenizer = load_model(str(pretrained), prec, frozen=True)
        if adapter:
            model = load_adapter(model, str(adapter))
        self._setup(model, tokenizer, prec, batch_size, max_length, add_bos_token, compile)

    @classmethod
    def from_model(
        cls,
        model,
        tokenizer,
        precision: Precision | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        compile: bool = False,
    ) -> SpilloverLM:
        """Wrap a model spillover already loaded (`lm_eval:` targets evaluate through this)."""
        lm = cls.__new__(cls)
        lm._setup(model, tokenizer, precision, batch_size, None, None, compile)
        return lm

    def _setup(self, model, tokenizer, precision, batch_size, max_length, add_bos_token, compile) -> None:
        super().__init__()
        self.model, self.tokenizer, self.precision = model, tokenizer, precision
        self.batch_size = _batch_size(batch_size)
        self.add_bos_token = _as_bool(add_bos_token) if add_bos_token is not None else None
        self.compile = _as_bool(compile)
        config_max = getattr(model.config, "max_position_embeddings", None)
        self.max_length = int(max_length) if max_length else (config_max or DEFAULT_MAX_LENGTH)

    # ------------------------------------------------------------------ tokenisation (as lm-eval's hf)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """The token an empty context starts from: BOS, else EOS (lm-eval `hf`)."""
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        if add_special_tokens is None:
            add_special_tokens = self.add_bos_token
            if string.startswith(self.tokenizer.decode(self.prefix_token_id)):
                add_special_tokens = False  # the prompt already starts with BOS
        special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return self.tokenizer.encode(string, **special)

    def tok_decode(self, tokens: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """Only called when lm-eval is asked for chat prompts (`--apply_chat_template`)."""
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    # ------------------------------------------------------------------ requests

    def _loglikelihood_tokens(
        self, requests, disable_tqdm: bool = False, **kwargs
    ) -> list[tuple[float, bool]]:
        """requests: ((context, continuation), context ids, continuation ids); answers (log p, is greedy).
        Requests sharing their context ids are packed into one row (one forward pass for all options)."""
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, (_, ctx, cont) in enumerate(requests):
            if cont:  # an empty continuation has log-probability 0 (and is trivially greedy)
                groups[tuple(ctx)].append(i)
        rows = [(list(ctx), [requests[i][2] for i in idx]) for ctx, idx in groups.items()]
        with _inference(self.model, self.precision):
            scored = score_requests(
                self.model,
                rows,
                batch_size=self.batch_size,
                pad_id=_pad_id(self.tokenizer),
                max_length=self.max_length,
                compile=self.compile,
            )
        answers: list[tuple[float, bool]] = [(0.0, True)] * len(requests)
        for idx, scores in zip(groups.values(), scored, strict=True):
            for i, s in zip(idx, scores, strict=True):
                answers[i] = (s.logprob, s.is_greedy)
        return answers

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-text log-likelihood (perplexity tasks): lm-eval's disjoint rolling windows of
        `max_length` tokens, each window's tokens scored given its context, summed per text."""
        owners, windows = [], []
        for i, req in enumerate(requests):
            (text,) = req.args
            for window in get_rolling_token_windows(
                token_list=self.tok_encode(text, add_special_tokens=False),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            ):
                owners.append(i)
                windows.append(make_disjoint_window(window))
        scores = self._loglikelihood_tokens([(None, ctx, cont) for ctx, cont in windows])
        totals = [0.0] * len(requests)
        for i, (logprob, _) in zip(owners, scores, strict=True):
            totals[i] += logprob
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations of each request's context, cut at its `until` strings (lm-eval's
        post-processing); requests are decoded in groups of equal `max_gen_toks`."""
        eos_text = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        settings = [_greedy_settings(req.args[1], eos_text) for req in requests]
        groups: dict[int, list[int]] = defaultdict(list)
        for i, (_, max_gen_toks) in enumerate(settings):
            groups[max_gen_toks].append(i)
        answers = [""] * len(requests)
        stop_ids = eos_ids(self.model, self.tokenizer)
        for max_gen_toks, idx in groups.items():
            room = max(1, self.max_length - max_gen_toks)  # lm-eval `hf`: the context is cut from the left
            prompts = [self.tok_encode(requests[i].args[0])[-room:] for i in idx]
            stops = [settings[i][0] for i in idx]
            with _inference(self.model, self.precision):
                gens = generate(
                    self.model, self.tokenizer, prompts, stops, max_gen_toks, self.batch_size, stop_ids
                )
            for i, gen in zip(idx, gens, strict=True):
                answers[i] = postprocess_generated_text(gen.text, settings[i][0], None)
        return answers


def _greedy_settings(gen_kwargs: dict, eos_text: str) -> tuple[list[str], int]:
    """(stop strings with the EOS text, max_gen_toks) of one request; sampling is refused."""
    kwargs = normalize_gen_kwargs(dict(gen_kwargs), MAX_GEN_TOKS)
    if kwargs.get("do_sample"):
        raise SpilloverError(
            f"the task asks for sampled generation ({gen_kwargs}); spillover decodes greedily only: "
            "set do_sample: false (or temperature: 0) in the task's generation_kwargs"
        )
    return handle_stop_sequences(kwargs.get("until"), eos=eos_text), int(kwargs["max_gen_toks"])


def _device(device: str | None) -> str:
    """lm-eval's CLI passes `cuda:0` unless told otherwise; like its `hf` model, fall back to the CPU
    when there is no CUDA device."""
    import torch

    if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
        return "auto"
    return str(device)


def _batch_size(value: int | str) -> int:
    """lm-eval's batch size option: a number, or `auto` / `auto:N` (spillover's default then)."""
    text = str(value)
    if text.startswith("auto"):
        return DEFAULT_BATCH_SIZE
    if not text.isdigit() or int(text) < 1:
        raise SpilloverError(f"batch_size {value!r}: must be a positive integer or auto")
    return int(text)


def _as_bool(value: bool | str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise SpilloverError(f"{value!r} is not a boolean; use true or false")


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
