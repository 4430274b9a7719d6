"""The architecture table: where each causal LM keeps its FFN activation and how wide it is.

NeuMuter's gate multiplies the FFN intermediate activation, i.e. the input of the FFN output (down)
projection. For gated MLPs (SwiGLU) the hook sits on act(gate_proj(x)) before the product with
up_proj(x); for a per-neuron multiplicative gate that is the same as gating the down projection's input.

This module is the only place that knows module paths. It also registers every architecture of the
table with pyvene's ``"mlp_activation"`` component, so that pyvene builds and loads interventions on
models it does not map itself (phi, phi3, opt, gptj, qwen3, gemma3, falcon, bloom).

Layer convention: layers are **0-based** everywhere in this library, the CLI included. The paper
numbers Transformer blocks from 1 (its Table 3 "2-8" for GPT-Neo 125M is ``"1-7"`` here); use
``describe_layers`` to see both numberings of a selection.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pyvene as pv
import torch
import transformers
from pyvene.models.constants import CONST_OUTPUT_HOOK
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from .errors import NeuMuterError

COMPONENT = "mlp_activation"


@dataclass(frozen=True)
class FFNArchitecture:
    """Where one architecture's FFN lives, as paths from the causal-LM root (``%s`` = layer index)."""

    activation: str  # module whose OUTPUT is the FFN intermediate activation
    output_projection: str  # module whose INPUT is that activation (Linear or GPT-2 Conv1D)
    width_fields: tuple[str, ...]  # config fields tried in order for the FFN width; "x*4" multiplies

    def width(self, config) -> int:
        for field_name in self.width_fields:
            name, _, factor = field_name.partition("*")
            value = getattr(config, name, None)
            if value is not None:
                return int(value) * int(factor or 1)
        raise NeuMuterError(f"cannot read the FFN width from the model config (tried {', '.join(self.width_fields)})")

    def activation_path(self, layer: int) -> str:
        return _dotted(self.activation, layer)

    def output_projection_path(self, layer: int) -> str:
        return _dotted(self.output_projection, layer)


def _dotted(template: str, layer: int) -> str:
    return template.replace("[%s]", f".{layer}")


_LLAMA_LIKE = FFNArchitecture("model.layers[%s].mlp.act_fn", "model.layers[%s].mlp.down_proj", ("intermediate_size",))

ARCHITECTURES: dict[str, FFNArchitecture] = {
    "gpt2": FFNArchitecture("transformer.h[%s].mlp.act", "transformer.h[%s].mlp.c_proj", ("n_inner", "n_embd*4")),
    "gpt_neo": FFNArchitecture(
        "transformer.h[%s].mlp.act", "transformer.h[%s].mlp.c_proj", ("intermediate_size", "hidden_size*4")
    ),
    "gpt_neox": FFNArchitecture(
        "gpt_neox.layers[%s].mlp.act", "gpt_neox.layers[%s].mlp.dense_4h_to_h", ("intermediate_size",)
    ),
    "gptj": FFNArchitecture("transformer.h[%s].mlp.act", "transformer.h[%s].mlp.fc_out", ("n_inner", "n_embd*4")),
    "falcon": FFNArchitecture(
        "transformer.h[%s].mlp.act", "transformer.h[%s].mlp.dense_4h_to_h", ("ffn_hidden_size", "hidden_size*4")
    ),
    "bloom": FFNArchitecture(
        "transformer.h[%s].mlp.gelu_impl", "transformer.h[%s].mlp.dense_4h_to_h", ("hidden_size*4",)
    ),
    "opt": FFNArchitecture("model.decoder.layers[%s].activation_fn", "model.decoder.layers[%s].fc2", ("ffn_dim",)),
    "phi": FFNArchitecture("model.layers[%s].mlp.activation_fn", "model.layers[%s].mlp.fc2", ("intermediate_size",)),
    "phi3": FFNArchitecture(
        "model.layers[%s].mlp.activation_fn", "model.layers[%s].mlp.down_proj", ("intermediate_size",)
    ),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "olmo": _LLAMA_LIKE,
}


def register_architecture(model_type: str, architecture: FFNArchitecture, model_class: type | None = None) -> None:
    """Teach the library (and pyvene) a new architecture.

    ``model_class`` defaults to the causal-LM class transformers maps ``model_type`` to.
    """
    ARCHITECTURES[model_type] = architecture
    cls = model_class or _causal_lm_class(model_type)
    if cls is not None:
        _register_with_pyvene(cls, architecture)


def architecture_of(model: torch.nn.Module) -> FFNArchitecture:
    """The table entry for a model, with a clear error for an architecture we do not know."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise NeuMuterError(
            f"architecture {model_type!r} has no known FFN activation (known: {known}); "
            "add it with neumuter_interv.register_architecture(...)"
        )
    _register_with_pyvene(type(model), ARCHITECTURES[model_type])
    return ARCHITECTURES[model_type]


def num_layers(model: torch.nn.Module) -> int:
    return int(model.config.num_hidden_layers)


def ffn_width(model: torch.nn.Module) -> int:
    return architecture_of(model).width(model.config)


def activation_module(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    return model.get_submodule(architecture_of(model).activation_path(layer))


def output_projection(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    return model.get_submodule(architecture_of(model).output_projection_path(layer))


# --- layer specifications -------------------------------------------------------------------------

_RANGE = re.compile(r"^([0-9]+)\s*-\s*([0-9]+)?$")  # ASCII digits: "²" or "٠" is not a layer number


def parse_layers(spec: str | int | Sequence[int], n_layers: int) -> list[int]:
    """0-based layer indices from ``"all"``, ``"3"``, ``"1-7"``, ``"10-16,21"``, ``"1-"`` (from 1 on:
    the official ``start_mask_layer=1``), or a list of ints. Sorted, without repeats."""
    if isinstance(spec, int):
        spec = [spec]
    if isinstance(spec, str):
        layers = _parse_layer_string(spec, n_layers)
    else:
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in spec):
            raise NeuMuterError(f"layers must be a spec string or a list of integers, got {spec!r}")
        layers = list(spec)
    if not layers:
        raise NeuMuterError(f"layer spec {spec!r} selects no layer")
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise NeuMuterError(
                f"layer {layer} is out of range: the model has {n_layers} layers, numbered 0-{n_layers - 1} (0-based)"
            )
    return sorted(set(layers))


def _parse_layer_string(spec: str, n_layers: int) -> list[int]:
    text = spec.strip().lower()
    if text in ("all", "*"):
        return list(range(n_layers))
    layers: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part.isascii() and part.isdigit():
            layers.append(int(part))
            continue
        if part.startswith("-"):
            raise NeuMuterError(f"layer spec {spec!r}: {part!r} is not a layer; layers are 0-based numbers 0-{n_layers - 1} "
                                "(negative numbers and ranges without a start are not accepted)")
        match = _RANGE.match(part)
        if not match:
            raise NeuMuterError(f"cannot read layer spec {spec!r}: use 'all', '3', '1-7', '10-16,21' or '1-'")
        start = int(match.group(1))
        if start >= n_layers:
            raise NeuMuterError(f"layer {start} is out of range: the model has {n_layers} layers, numbered "
                                f"0-{n_layers - 1} (0-based)")
        stop = int(match.group(2)) if match.group(2) is not None else n_layers - 1
        if stop < start:
            raise NeuMuterError(f"layer range {part!r} runs backwards")
        layers.extend(range(start, stop + 1))
    return layers


def describe_layers(layers: Sequence[int]) -> str:
    """Both numberings, e.g. ``"0-based 1-7 (paper blocks 2-8)"``, to make the convention impossible to miss."""
    return f"0-based {_compact(layers, 0)} (paper blocks {_compact(layers, 1)})"


def _compact(layers: Sequence[int], offset: int) -> str:
    runs: list[list[int]] = []
    for layer in sorted(layers):
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return ",".join(
        str(r[0] + offset) if len(r) == 1 else f"{r[0] + offset}-{r[-1] + offset}" for r in runs
    )


# --- pyvene registration ----------------------------------------------------------------------------


def _causal_lm_class(model_type: str) -> type | None:
    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    try:
        return getattr(transformers, name) if name else None
    except (AttributeError, ImportError):
        return None


def _register_with_pyvene(cls: type, architecture: FFNArchitecture) -> None:
    """Add ``mlp_activation`` for ``cls`` to pyvene's tables, leaving pyvene's own entries alone."""
    modules = pv.type_to_module_mapping.setdefault(cls, {})
    if COMPONENT not in modules:
        modules[COMPONENT] = (architecture.activation, CONST_OUTPUT_HOOK)
        dims = pv.type_to_dimension_mapping.setdefault(cls, {})
        dims[COMPONENT] = architecture.width_fields


def register_known_architectures() -> None:
    """Make pyvene able to build and load ``mlp_activation`` interventions on every architecture above.

    Called when the package is imported, so ``pyvene.IntervenableModel.load`` works on (say) a phi3
    model in a fresh process as soon as it imports one of our intervention classes.
    """
    for model_type, architecture in ARCHITECTURES.items():
        cls = _causal_lm_class(model_type)
        if cls is not None:
            _register_with_pyvene(cls, architecture)


