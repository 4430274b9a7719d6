"""``--to pyvene``: the frozen intervention as a pyvene directory.

Loads two ways: ``neumuter_interv.intervenable.load(DIR, model)`` (safe: allow-listed classes,
``interventions.safetensors``) and plain ``pyvene.IntervenableModel.load(DIR, model)`` (needs this
package importable; reads pyvene's ``intkey_*.bin``, tensor-only state dicts that torch>=2.6 loads
with ``weights_only=True``).
"""

from __future__ import annotations

from pathlib import Path

from ..methods.neumuter.selection import freeze
from ..serialization import save_intervenable
from .job import ExportJob


def write_pyvene_package(job: ExportJob, directory: Path) -> None:
    save_intervenable(freeze(job.model, job.selection), directory, with_pyvene_pickles=True)


LOAD_SNIPPET = """\
from transformers import AutoModelForCausalLM
from huggingface_hub import snapshot_download
from neumuter_interv.intervenable import intervened_generate, load

model = AutoModelForCausalLM.from_pretrained("{base_model}")
unlearned = load(snapshot_download("{location}"), model)  # or a local directory
# generate with the mask on every position, the prompt included:
# intervened_generate(unlearned, input_ids, attention_mask, max_new_tokens=32)
"""
