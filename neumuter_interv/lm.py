"""One interface over "a language model we can evaluate": a plain Hugging Face causal LM or a
``pyvene.IntervenableModel`` whose interventions apply at every position.

Metrics, the localization loop and the comparison harness talk to ``LanguageModel`` only, so an
unlearned model counts the same whether it is a weight edit or an intervention.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Sequence

import pyvene as pv
import torch
import torch.nn.functional as F

from .errors import NeuMuterError
from .intervenable import intervened_logits


def resolve_device(name: str | torch.device) -> torch.device:
    """A torch device from a name; "auto" is the GPU when there is one, else the CPU. An unknown name, or
    a GPU asked for where there is none, is a ``NeuMuterError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise NeuMuterError(f"unknown device {name!r}: use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NeuMuterError(f"device {name!r} asked for, but torch sees no GPU here: use cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise NeuMuterError(f"device {name!r} asked for, but torch sees {torch.cuda.device_count()} GPU(s) here "
                            f"(cuda:0-{torch.cuda.device_count() - 1})")
    if device.type not in ("cpu", "cuda"):
        here = "cpu, auto" + (", cuda, cuda:N" if torch.cuda.is_available() else "")
        raise NeuMuterError(f"device {name!r} is not one this library runs on; devices here: {here}")
    return device


def bfloat16_is_fast(device: torch.device) -> bool:
    """bf16 matmuls in hardware: any CUDA GPU with bf16, or a CPU with AVX512-BF16 / AMX (oneDNN says)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())


def auto_precision(device: torch.device) -> dict[str, str]:
    """What ``dtype="auto"`` computes in on ``device`` and on what hardware, recorded with every result of the
    demo and the comparison: "auto" is bf16 only where the hardware runs it fast, so the same command computes
    in bf16 on one machine and in fp32 on another (a CPU without AVX512-BF16 or AMX), and its numbers (the
    Eq. 17 verdicts, hence the mask) differ between the two."""
    hardware = (torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"CPU ({torch.backends.cpu.get_cpu_capability()})")
    return {"auto": resolved_dtype("auto", device), "hardware": hardware}


def describe_precision(dtype: str, precision: dict[str, str] | None) -> str:
    """``dtype`` as a report says it: "auto (bfloat16 on CPU (AVX512))"; ``precision`` is ``auto_precision``'s
    record, None for a result written before it was recorded."""
    if dtype != "auto" or precision is None:
        return dtype
    return f"auto ({precision['auto']} on {precision['hardware']})"


DTYPES = ("float32", "bfloat16", "float16", "auto")


def check_dtype(dtype: str) -> None:
    """Refuse a compute dtype ``autocast`` does not know, in one line."""
    if dtype not in DTYPES:
        raise NeuMuterError(f"dtype must be float32, bfloat16, float16 or auto, got {dtype!r}")


def resolved_dtype(dtype: str, device: torch.device) -> str:
    """The name of the dtype a forward computes in on ``device``: ``dtype``, with "auto" resolved (bfloat16 where
    the hardware runs it fast, else float32); what results and cache keys record."""
    if dtype == "auto":
        return "bfloat16" if bfloat16_is_fast(device) else "float32"
    return dtype


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """The torch dtype ``autocast`` computes in, None for ``float32`` (no autocast)."""
    dtype = resolved_dtype(dtype, device)
    return None if dtype == "float32" else getattr(torch, dtype)


def autocast(dtype: str, device: torch.device):
    """The forward's compute dtype: ``float32`` (no autocast), ``bfloat16``, ``float16``, or ``auto``
    (bfloat16 where the hardware runs it fast, else float32). Weights stay fp32."""
    target = autocast_dtype(dtype, device)
    return contextlib.nullcontext() if target is None else torch.autocast(device_type=device.type, dtype=target)


@contextlib.contextmanager
def weights_cast_once(model: torch.nn.Module):
    """Under autocast, the model's frozen weights cast to the compute dtype once for the block, not at every
    forward. Autocast caches a weight's cast only for a leaf that requires grad, so the frozen weights of a
    scored model are re-cast at every step of a decoding loop (a third of a bf16 step of SmolLM2 on a CPU:
    ``benchmarks/scoring.py``). They are marked as requiring grad for the block (meant for ``no_grad`` code:
    nothing records a graph) and the cache is cleared after it, so a later change of the weights is seen."""
    device_type = next(model.parameters()).device.type
    if not torch.is_autocast_enabled(device_type):
        yield
        return
    frozen = [p for p in model.parameters() if p.is_floating_point() and not p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(True)
    try:
        yield
    finally:
        for parameter in frozen:
            parameter.requires_grad_(False)
        torch.clear_autocast_cache()


class _FrozenLinear(torch.autograd.Function):
    """``F.linear`` of a frozen weight in the autocast dtype, as autocast computes it, whose backward re-casts
    the weight instead of keeping the cast: autograd keeps a linear's cast weight for the input's gradient, so
    under autocast a backward through a frozen model holds a second copy of its weights in the compute dtype
    (235 MB of SmolLM2-135M's 620 MB of saved tensors at a localization step of batch 2)."""

    @staticmethod
    def forward(ctx, x, weight, bias, dtype):
        ctx.save_for_backward(weight)
        ctx.dtype = dtype
        with torch.autocast(x.device.type, enabled=False):
            return F.linear(x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype))

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        with torch.autocast(grad.device.type, enabled=False):
            return grad.to(ctx.dtype) @ weight.to(ctx.dtype), None, None, None


def _frozen_linear_forward(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    device_type = x.device.type
    if module.weight.requires_grad or not torch.is_grad_enabled() or not torch.is_autocast_enabled(device_type):
        return torch.nn.Linear.forward(module, x)
    return _FrozenLinear.apply(x, module.weight, module.bias, torch.get_autocast_dtype(device_type))


@contextlib.contextmanager
def frozen_weights_unsaved(model: torch.nn.Module):
    """In the block, a backward under autocast through the model's frozen ``nn.Linear`` layers re-casts their
    weights instead of keeping a cast copy of each from the forward (``_FrozenLinear``): the same values (the
    same bf16 products), one copy of the weights less at the peak of a step, one cast per weight more. Layers
    that train, and every forward without grad or autocast, are untouched."""
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear and not m.weight.requires_grad]
    for module in linears:
        module.forward = functools.partial(_frozen_linear_forward, module)
    try:
        yield
    finally:
        for module in linears:
            del module.forward


class LanguageModel:
    """``logits`` and greedy ``generate`` for a causal LM, with or without pyvene interventions."""

    def __init__(self, model: torch.nn.Module | pv.IntervenableModel):
        self.intervenable = model if isinstance(model, pv.IntervenableModel) else None
        self.model = model.model if self.intervenable is not None else model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def config(self):
        return self.model.config

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for a batch, which may live on another device than the model (it is moved)."""
        input_ids = input_ids.to(self.device)
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(self.device)
        if self.intervenable is not None:
            return intervened_logits(self.intervenable, input_ids, attention_mask)
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    @torch.no_grad()
    def greedy(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
               lengths: Sequence[int] | None = None) -> torch.Tensor:
        """Greedy continuation of exactly ``max_new_tokens`` tokens, returning the NEW tokens only:
        [batch, max_new_tokens]. Expects LEFT-padded prompts, as decoder-only generation requires.

        What ``generate(do_sample=False, min_new_tokens=max_new_tokens)`` computes (the end-of-sequence
        tokens are masked so that nothing ends early; positions count from each row's first real token),
        as a plain loop over the KV cache: ``generate``'s per-step bookkeeping costs as much as a small
        model's forward. With interventions, every position is intervened, the prompt included.

        ``lengths``: each row's own count (at most ``max_new_tokens``); a row leaves the batch, KV cache
        included, once it has its count, so a batch costs its rows' counts, not rows x the longest; the
        places past a row's count hold -1.
        """
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        end_ids = self.end_token_ids()
        positions = attention_mask.long().cumsum(-1) - 1
        positions = positions.masked_fill(attention_mask == 0, 1)
        keep_last = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        wanted = torch.as_tensor(lengths if lengths is not None else [max_new_tokens] * input_ids.shape[0],
                                 device=self.device)
        new = input_ids.new_full((input_ids.shape[0], max_new_tokens), -1)
        rows = torch.arange(input_ids.shape[0], device=self.device)  # the batch rows still decoding
        step_ids, past = input_ids, None
        with weights_cast_once(self.model):
            for step in range(max_new_tokens):
                outputs = self._forward(step_ids, attention_mask, positions, past, keep_last)
                scores = outputs.logits[:, -1].float()
                scores[:, end_ids] = float("-inf")
                step_ids = scores.argmax(-1, keepdim=True)
                new[rows, step] = step_ids[:, 0]
                past = outputs.past_key_values
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], 1)
                positions = positions[:, -1:] + 1
                going = wanted[rows] > step + 1
                if not bool(going.all()):
                    if not bool(going.any()):
                        break
                    kept = going.nonzero().squeeze(1)
                    rows, step_ids, attention_mask, positions = rows[kept], step_ids[kept], attention_mask[kept], positions[kept]
                    past.reorder_cache(kept)
        return new

    def _forward(self, input_ids, attention_mask, position_ids, past, keep_last: bool):
        """One decoding forward; ``keep_last``: the model can compute the last position's logits only (the
        prompt pass needs no others)."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
                  "past_key_values": past, "use_cache": True}
        if keep_last:  # as a position, not the count 1: the count slices a view that is not contiguous, which
            # the head's matmul multiplies by a copy of its weight per row (slower than the whole model in bf16)
            inputs["logits_to_keep"] = torch.tensor([input_ids.shape[1] - 1], device=input_ids.device)
        if self.intervenable is not None:
            return self.intervenable(inputs, unit_locations=None)[1]
        return self.model(**inputs)

    def end_token_ids(self) -> list[int]:
        """The end-of-sequence ids of the model's generation config (or config), which greedy never emits."""
        ids = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if ids is None:
            ids = getattr(self.config, "eos_token_id", None)
        return [] if ids is None else [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]


def as_language_model(model) -> LanguageModel:
    return model if isinstance(model, LanguageModel) else LanguageModel(model)
