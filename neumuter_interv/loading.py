"""Loading a causal LM and its tokenizer from a local directory or a Hub id, with clear errors."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .architectures import architecture_of
from .errors import NeuMuterError


def load_causal_lm(name_or_path: str, dtype: str = "float32"):
    """``(model, tokenizer)`` in eval mode; the tokenizer gets a pad token (EOS) if it has none.

    Refuses an architecture without a known FFN activation before any work is done.
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=getattr(torch, dtype))
    except (OSError, ValueError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NeuMuterError(f"cannot load a causal LM from {name_or_path!r}: {first_line}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    architecture_of(model)
    return model.eval(), tokenizer
