"""``--to merged``: the mask folded into the model weights, a plain transformers checkpoint.

Scaling neuron i of the FFN activation equals scaling input column i of the FFN output projection's
weight: ``Linear`` stores [out, in] (so columns), GPT-2's ``Conv1D`` stores [in, out] (so rows).
The bias is not touched.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers.pytorch_utils import Conv1D

from ..architectures import output_projection
from ..errors import NeuMuterError
from .job import ExportJob


def write_merged_checkpoint(job: ExportJob, directory: Path) -> None:
    """``save_pretrained`` (safetensors) of the model with the mask folded in, plus the tokenizer.

    The model is modified only while saving: the original projection weights are put back after.
    """
    originals: dict[int, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for layer, scale in job.dense_scales().items():
                projection = output_projection(job.model, layer)
                originals[layer] = projection.weight.detach().clone()
                projection.weight.copy_(scaled_projection_weight(projection, scale))
        job.model.save_pretrained(str(directory))
    finally:
        with torch.no_grad():
            for layer, weight in originals.items():
                output_projection(job.model, layer).weight.copy_(weight)
    job.tokenizer.save_pretrained(str(directory))


def scaled_projection_weight(projection: torch.nn.Module, scale: torch.Tensor) -> torch.Tensor:
    """The projection's weight with its input dimension multiplied by ``scale`` (computed in fp32)."""
    weight = projection.weight
    scale = scale.to(device=weight.device, dtype=torch.float32)
    if isinstance(projection, Conv1D):
        return (weight.float() * scale[:, None]).to(weight.dtype)
    if isinstance(projection, torch.nn.Linear):
        return (weight.float() * scale[None, :]).to(weight.dtype)
    raise NeuMuterError(f"cannot fold a mask into a {type(projection).__name__} FFN output projection")


LOAD_SNIPPET = """\
from transformers import AutoModelForCausalLM, AutoTokenizer

unlearned = AutoModelForCausalLM.from_pretrained("{location}")
tokenizer = AutoTokenizer.from_pretrained("{location}")
"""
