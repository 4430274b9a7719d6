"""``--to peft-ia3``: the frozen mask as a PEFT IA3 adapter, loadable with PEFT alone.

A per-neuron scale on the FFN activation of layer l equals IA3 on that layer's FFN output projection
declared as a feed-forward module: IA3 then scales the projection's INPUT, i.e. the activation.
The adapter's ``ia3_l`` is the dense scale vector (ones except the selected neurons). Layers are
picked with a regex string (peft 0.21 matches a string ``target_modules`` as a full-match regex).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from peft import IA3Config, get_peft_model
from transformers.pytorch_utils import Conv1D

from ..architectures import architecture_of, output_projection
from ..errors import NeuMuterError
from .job import ExportJob

ADAPTER_NAME = "default"


def write_ia3_adapter(job: ExportJob, directory: Path) -> None:
    """Save the adapter into ``directory``; the model is wrapped only while saving and restored after."""
    architecture = architecture_of(job.model)
    scales = job.dense_scales()
    kinds = {_projection_kind(job.model, layer) for layer in scales}
    paths = [architecture.output_projection_path(layer) for layer in scales]
    pattern = "^(" + "|".join(re.escape(path) for path in paths) + ")$"
    config = IA3Config(task_type="CAUSAL_LM", target_modules=pattern, feedforward_modules=pattern,
                       fan_in_fan_out=kinds == {Conv1D})
    peft_model = get_peft_model(job.model, config, adapter_name=ADAPTER_NAME)
    peft_model.peft_config[ADAPTER_NAME].base_model_name_or_path = job.base_model  # not the model's own name
    try:
        with torch.no_grad():
            for path, scale in zip(paths, scales.values()):
                ia3_scale = peft_model.base_model.model.get_submodule(path).ia3_l[ADAPTER_NAME]
                ia3_scale.copy_(scale.view_as(ia3_scale))
        peft_model.save_pretrained(str(directory), save_embedding_layers=False)  # IA3 never touches embeddings
    finally:
        peft_model.unload()  # puts the original projections back; nothing is merged


def _projection_kind(model: torch.nn.Module, layer: int) -> type:
    projection = output_projection(model, layer)
    for kind in (Conv1D, torch.nn.Linear):
        if isinstance(projection, kind):
            return kind
    raise NeuMuterError(f"PEFT IA3 cannot wrap the FFN output projection of layer {layer} "
                        f"({type(projection).__name__}); export --to pyvene or --to merged instead")


LOAD_SNIPPET = """\
from transformers import AutoModelForCausalLM
from peft import PeftModel

base = AutoModelForCausalLM.from_pretrained("{base_model}")
unlearned = PeftModel.from_pretrained(base, "{location}")  # .merge_and_unload() folds it in
"""
