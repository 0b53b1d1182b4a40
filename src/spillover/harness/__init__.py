"""lm-evaluation-harness interop (optional extra `spillover[lm-eval]`).

- `tasks.py`: an lm-eval task as a spillover target (`lm_eval:TASK`): lm-eval builds the task and its
  requests, spillover's scorer answers them, lm-eval's filters and metrics score them.
- `backend.py`: `SpilloverLM`, spillover's scorer as an lm-eval model (`lm_eval --model spillover`).
- `hook.py`: registers that model when lm-eval's model registry loads, for lm-eval releases that do not
  read the `lm_eval.models` entry point.

This package imports nothing at import time: `hook.py` runs in every interpreter of the environment.
"""
