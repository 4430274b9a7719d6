"""One interface over "a language model we can evaluate": a plain Hugging Face causal LM or a
``pyvene.IntervenableModel`` whose interventions apply at every position.

Metrics, the localization loop and the comparison harness talk to ``LanguageModel`` only, so an
unlearned model counts the same whether it is a weight edit or an intervention.
"""

from __future__ import annotations

import contextlib

import pyvene as pv
import torch

from .errors import NeuMuterError
from .intervenable import intervened_generate, intervened_logits


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
    return device


def bfloat16_is_fast(device: torch.device) -> bool:
    """bf16 matmuls in hardware: any CUDA GPU with bf16, or a CPU with AVX512-BF16 / AMX (oneDNN says)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """The torch dtype ``autocast`` computes in, None for ``float32`` (no autocast)."""
    if dtype == "auto":
        dtype = "bfloat16" if bfloat16_is_fast(device) else "float32"
    return None if dtype == "float32" else getattr(torch, dtype)


def autocast(dtype: str, device: torch.device):
    """The forward's compute dtype: ``float32`` (no autocast), ``bfloat16``, ``float16``, or ``auto``
    (bfloat16 where the hardware runs it fast, else float32). Weights stay fp32."""
    target = autocast_dtype(dtype, device)
    return contextlib.nullcontext() if target is None else torch.autocast(device_type=device.type, dtype=target)


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
    def greedy(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy continuation (KV cache on), returning the NEW tokens only: [batch, max_new_tokens].

        Expects LEFT-padded prompts, as decoder-only generation requires.
        """
        kwargs = dict(
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=self._pad_token_id(),
        )
        if self.intervenable is not None:
            sequences = intervened_generate(self.intervenable, input_ids, attention_mask, **kwargs)
        else:
            sequences = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return sequences[:, input_ids.shape[1]:]

    def _pad_token_id(self) -> int:
        config = self.model.config
        pad = getattr(config, "pad_token_id", None)
        if pad is None:
            pad = getattr(getattr(self.model, "generation_config", None), "pad_token_id", None)
        if pad is None:
            pad = getattr(config, "eos_token_id", None)
            if isinstance(pad, (list, tuple)):
                pad = pad[0]
        return 0 if pad is None else int(pad)


def as_language_model(model) -> LanguageModel:
    return model if isinstance(model, LanguageModel) else LanguageModel(model)
