"""Regional compilation: `torch.compile` of the decoder layers, for training and for log-likelihood scoring.

A bf16 LoRA step on a CPU spends less than half its time in matmuls; the rest is elementwise work and
dtype casts around them (the fp32 residual stream, RMSNorm, rotary embeddings, SiLU, the fp32 adapter sum),
one small kernel each, forward and backward. Inductor fuses those into a few loops per layer. Compiling the
whole model took ~10 min on 2 cores; compiling the decoder layers ("regional compilation") traces ONE
layer, since every layer runs the same code on the same structure (`dynamic=True`: any batch shape), so
it costs one layer's compile, and later trainings on the same base in that process reuse it. On 2 cores:
~65 s the first time on a machine, ~3 s in every later process, which finds the kernels (Inductor) and
the traced forward/backward graphs (AOTAutograd) in the on-disk caches (/tmp/torchinductor_<user>) and
skips Inductor's instruction-set probe (`reuse_vec_isa_probe`).
Measured on the embedded model (benchmarks/README.md): ~1.45× the eager training throughput, loss curve
within bf16 noise of eager. Scoring (inference mode, no backward) compiles its own graph (~20 s cold,
~9 s warm) and runs 1.4–1.6× faster (evaluation/scoring.py decides when that pays).

This needs a C++ compiler for Inductor's CPU kernels. If compiling fails, the work goes on eagerly with
one warning (`CompiledLayers.call`), and nothing in the process tries to compile again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spillover.atomic import atomic_write_text

log = logging.getLogger(__name__)

BACKEND = "inductor"
# Every graph of every decoder layer is a cache entry of ONE code object (the layer's forward): LoRA training,
# full fine-tuning, each attention kernel, scoring of the base model and of an adapter model, batch size 1
# (dynamo specialises it). Dynamo's default limit of 8 entries would silently send a study's later work
# back to eager, so compiling raises it to this.
RECOMPILE_LIMIT = 64
# the command-line spelling of a compile setting (`--compile auto|on|off`) -> the setting itself
COMPILE_CHOICES: dict[str, bool | str] = {"auto": "auto", "on": True, "off": False}
broken = False  # compiling failed once in this process: later CompiledLayers run eagerly without trying


class Hotness:
    """The "auto" rule, like a JIT's hotness counter: compile once the work of one kind (training, scoring)
    done in this process, the current call's included, reaches `threshold` FLOP (2 · parameters · tokens),
    about the work whose compiled speed-up repays one compile. Later calls reuse the compiled code, so from
    then on compiling is free. One big call compiles at once; many small ones do after the first few."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.flop = 0.0  # work counted so far in this process

    def wants(self, setting: bool | str, model: nn.Module, n_tokens: float, cpu_bf16: bool) -> bool:
        """Count a call of `n_tokens` tokens through `model` (whatever `setting` says); should it run
        compiled? True/False decide; "auto": on a CPU under bf16 autocast (`cpu_bf16`; GPUs stay eager:
        nothing was measured on them) once the process is hot."""
        self.flop += 2 * sum(p.numel() for p in model.parameters()) * n_tokens
        return cpu_bf16 and self.flop >= self.threshold if setting == "auto" else bool(setting)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks: transformers marks every decoder layer as a GradientCheckpointingLayer."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


class CompiledLayers:
    """Runs calls of `model` with its decoder layers compiled (`call`); outside those calls they run eagerly,
    so other forward passes in the same process compile nothing."""

    def __init__(self, model: nn.Module, work: str = "training"):
        self.eager = eager_layers(model)
        layers = [m for m, _ in self.eager]
        self.work = work  # what runs compiled, for the warnings
        # one wrapper per layer; dynamo caches the compiled code per code object, shared by all of them
        self.compiled = [(m, torch.compile(run, backend=BACKEND, dynamic=True)) for m, run in self.eager]
        reuse_vec_isa_probe()
        dynamo_config = torch._dynamo.config  # imported by torch.compile
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
        get_embeddings = getattr(model, "get_input_embeddings", None)
        self.embeddings = get_embeddings() if get_embeddings is not None else None
        self.failed = broken or not layers
        if not layers:
            log.warning("compile: no decoder layers found in %s; %s runs eagerly", type(model).__name__, work)
        self.proven = False  # a compiled call went through

    @contextlib.contextmanager
    def _inputs_need_grad(self) -> Iterator[None]:
        """With gradients on, the first layer's input requires grad like every other layer's, so training
        traces ONE graph for all layers instead of two (the first layer's input is the frozen embeddings'
        output: its own graph, without the input gradient): half the compile time, for one layer's
        input-gradient matmuls per step."""
        if self.embeddings is None or not torch.is_grad_enabled():
            yield
            return
        handle = self.embeddings.register_forward_hook(_require_grad)
        try:
            yield
        finally:
            handle.remove()

    def call(self, fn: Callable[[], Any], layer_kwargs: Sequence[dict[str, Any]] | None = None) -> Any:
        """`fn()` (a forward pass of the model) with compiled layers; eagerly if compiling fails.
        `layer_kwargs`: extra keyword arguments per decoder layer (see `running_layers`)."""
        if self.failed:
            with running_layers(self.eager, layer_kwargs):
                return fn()
        try:
            # Python floats (RMSNorm's eps, LoRA's scaling, attention's scale) as constants: traced as
            # symbolic inputs instead, they make dynamo restart its analysis once and miss AOTAutograd's cache
            with (
                running_layers(self.compiled, layer_kwargs),
                torch._dynamo.config.patch(specialize_float=True),
                self._inputs_need_grad(),
            ):
                out = fn()
        except Exception as err:
            if self.proven:  # compiling worked before: this error is the model's, not the compiler's
                raise
            global broken
            self.failed = broken = True
            first_line = (str(err).splitlines() or [""])[0]
            log.warning(
                "compile: compiling the decoder layers failed (%s: %s); %s runs eagerly",
                type(err).__name__,
                first_line,
                self.work,
            )
        else:
            self.proven = True
            return out
        with running_layers(self.eager, layer_kwargs):
            return fn()


# in Inductor's cache folder, next to the kernels it vouches for
VEC_ISA_RECORD = "spillover-vec-isa-{key}.json"


@functools.cache
def reuse_vec_isa_probe() -> None:
    """Probe the CPU's vector instruction sets for Inductor once per machine instead of once per process.

    Before Inductor loads even a cached kernel, it checks each instruction set the CPU reports (AMX,
    AVX-512 VNNI, AVX-512, AVX2) by building a probe library and loading it in a child Python process: ~10
    subprocesses, ~2 s of every process that compiles on this 2-core machine (a quarter of a warm first
    training step). The outcome depends only on the CPU, torch and the C++ compiler, so the first process
    probes as usual and records it next to Inductor's on-disk cache; when every reported set passed, this
    and every later process tell Inductor so (`cpp.vec_isa_ok`) and it picks the same set without probing.
    The setting is part of Inductor's cache key, which is why the first process sets it too. If a set
    failed, nothing is set: Inductor probes as before. A user's `TORCHINDUCTOR_VEC_ISA_OK` wins. Inductor
    internals: any surprise leaves Inductor's default alone."""
    try:
        import platform
        import shutil

        from torch._inductor import config as inductor_config
        from torch._inductor import cpu_vec_isa
        from torch._inductor.cpp_builder import get_cpp_compiler
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        if inductor_config.cpp.vec_isa_ok is not None or platform.machine() not in ("x86_64", "AMD64"):
            return
        with inductor_config.patch({"cpp.vec_isa_ok": True}):  # what the CPU reports, unprobed
            reported = [str(isa) for isa in cpu_vec_isa.valid_vec_isa_list.__wrapped__()]
        compiler = shutil.which(get_cpp_compiler()) or get_cpp_compiler()
        stat = os.stat(compiler) if os.path.exists(compiler) else None
        identity = [torch.__version__, reported, compiler, stat and [stat.st_size, stat.st_mtime_ns]]
        key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:20]
        record = Path(cache_dir()) / VEC_ISA_RECORD.format(key=key)
        if record.exists():
            passed = json.loads(record.read_text())["passed"]
        else:
            # probes (cached for the rest of this process)
            passed = [str(isa) for isa in cpu_vec_isa.valid_vec_isa_list()]
            atomic_write_text(record, json.dumps({"identity": identity, "passed": passed}))
        if reported and passed == reported:
            inductor_config.cpp.vec_isa_ok = True
    except Exception as err:  # an optimisation of Inductor's start-up: never a reason to fail
        log.debug("compile: not reusing Inductor's instruction-set probe (%s: %s)", type(err).__name__, err)


def eager_layers(model: nn.Module) -> list[tuple[nn.Module, Callable]]:
    """The decoder layers, each with its plain (eager) call, for `running_layers`."""
    return [(m, m._call_impl) for m in decoder_layers(model)]


@contextlib.contextmanager
def running_layers(
    layers: Sequence[tuple[nn.Module, Callable]], layer_kwargs: Sequence[dict[str, Any]] | None = None
) -> Iterator[None]:
    """Within the block, each decoder layer runs through its callable (compiled or eager; `nn.Module.__call__`
    uses `_compiled_call_impl` when set), given its own `layer_kwargs[i]` on top of what the model passes
    every layer (e.g. a cached prefix, `models.prefix_cache`)."""
    assert layer_kwargs is None or len(layer_kwargs) == len(layers), "one set of keyword arguments per layer"
    for i, (layer, run) in enumerate(layers):
        layer._compiled_call_impl = run if not layer_kwargs else functools.partial(run, **layer_kwargs[i])
    try:
        yield
    finally:
        for layer, _ in layers:
            layer._compiled_call_impl = None


def _require_grad(module: nn.Module, args, out: Any) -> None:
    if isinstance(out, torch.Tensor) and not out.requires_grad:  # a leaf: the embeddings are frozen
        out.requires_grad_(True)
