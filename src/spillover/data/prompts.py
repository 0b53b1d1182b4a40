"""Prompt rendering: instruction + input, optional k-shot demonstrations, optional chat template.

Two modes, per task:
- chat (`chat_template: true`, the default): the conversation [demo user/assistant turns..., user] is
  rendered through the tokenizer's chat template with the generation prompt; the training target is the
  assistant's answer plus the template's end-of-turn text, so the model learns to stop.
- raw (`chat_template: false`): lm-evaluation-harness layout, `instruction\n\n` + demos joined by
  `fewshot_delimiter` + input; continuations start with `target_delimiter`. Results then compare
  one-to-one with lm-eval's `multiple_choice` / `generate_until` tasks on the same prompt.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from spillover.data.tasks import Example, TaskSpec

log = logging.getLogger(__name__)
_warned: set[str] = set()  # tasks already warned about a missing chat template (warn once, not per example)


def uses_chat(task: TaskSpec, tokenizer) -> bool:
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if task.chat_template and not has_template and task.name not in _warned:
        _warned.add(task.name)
        log.warning(
            "task %s asks for a chat template but the tokenizer has none; using raw prompts", task.name
        )
    return task.chat_template and has_template


def user_text(task: TaskSpec, example: Example) -> str:
    return f"{task.instruction}\n\n{example.text}" if task.instruction else example.text


def render_context(task: TaskSpec, tokenizer, example: Example, demos: Sequence[Example] = ()) -> str:
    """The prompt the model continues: everything before the answer."""
    if uses_chat(task, tokenizer):
        messages = []
        for d in demos:
            messages += [
                {"role": "user", "content": user_text(task, d)},
                {"role": "assistant", "content": d.target},
            ]
        messages.append({"role": "user", "content": user_text(task, example)})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    head = f"{task.instruction}\n\n" if task.instruction else ""
    shots = [f"{d.text}{task.target_delimiter}{d.target}" for d in demos]
    return head + task.fewshot_delimiter.join([*shots, example.text])


def answer_prefix(task: TaskSpec, tokenizer) -> str:
    """What goes between the context and an answer (or option) text."""
    return "" if uses_chat(task, tokenizer) else task.target_delimiter


def end_of_answer(task: TaskSpec, tokenizer) -> str:
    """What follows a complete answer: the chat template's end of turn, or the EOS token in raw mode."""
    if not uses_chat(task, tokenizer):
        return tokenizer.eos_token or ""
    probe = [{"role": "user", "content": "x"}]
    opened = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    closed = tokenizer.apply_chat_template(
        [*probe, {"role": "assistant", "content": "\x00"}], tokenize=False, add_generation_prompt=False
    )
    tail = closed[len(opened) :].split("\x00", 1)
    return tail[1] if len(tail) == 2 else (tokenizer.eos_token or "")


def render_training(
    task: TaskSpec, tokenizer, example: Example, demos: Sequence[Example] = ()
) -> tuple[str, str]:
    """(context, continuation) for supervised fine-tuning; loss goes on the continuation only."""
    context = render_context(task, tokenizer, example, demos)
    return context, answer_prefix(task, tokenizer) + example.target + end_of_answer(task, tokenizer)


def sample_demos(pool: Sequence[Example], k: int, seed: int, exclude_id: str | None = None) -> list[Example]:
    """k demonstrations from `pool` (a train split), seeded; never the example itself."""
    if k <= 0:
        return []
    candidates = [e for e in pool if e.id != exclude_id]
    rng = random.Random(f"{seed}:{exclude_id}")
    return rng.sample(candidates, min(k, len(candidates)))
