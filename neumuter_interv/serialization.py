"""Saving and loading pyvene interventions without pickles and without importing code named in a file.

``pyvene.IntervenableModel.load`` imports every class path that ``config.json`` names and
``torch.load``-s ``intkey_*.bin`` pickles: loading someone else's directory runs their code. Here:

* weights live in ONE ``interventions.safetensors`` file, keys ``"<intervention key>.<tensor name>"``
  (the pyvene key, e.g. ``layer_3_comp_mlp_activation_unit_pos_nunit_1#0.neuron_scales``);
* ``config.json`` is pyvene's own, so the directory also loads with pyvene when its pickles are kept;
* ``load_intervenable`` reads ``config.json`` as plain JSON, maps each class string through an
  ALLOW-LIST of classes already imported (ours plus pyvene's built-ins that are rebuilt from the
  config alone), and reads weights only from the safetensors file. Anything else is refused with a
  ``NeuMuterError`` that names the file or class. Extend the list with ``register_safe_intervention``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
from pathlib import Path

import pyvene as pv
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .architectures import ARCHITECTURES, architecture_of
from .data import read_json_file
from .errors import NeuMuterError
from .hard_concrete import HardConcreteParams
from .interventions import FFNIntervention, FrozenScaling, HardConcreteGate

WEIGHTS_FILE = "interventions.safetensors"
CONFIG_FILE = "config.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

# pyvene built-ins that pyvene itself can rebuild from a saved config (PCARotatedSpaceIntervention
# cannot: it needs the PCA input at construction).
_PYVENE_BUILTINS = (
    pv.VanillaIntervention, pv.AdditionIntervention, pv.SubtractionIntervention, pv.ZeroIntervention,
    pv.CollectIntervention, pv.SkipIntervention, pv.NoiseIntervention, pv.SigmoidMaskIntervention,
    pv.RotatedSpaceIntervention, pv.LowRankRotatedSpaceIntervention, pv.BoundlessRotatedSpaceIntervention,
    pv.SigmoidMaskRotatedSpaceIntervention, pv.AutoencoderIntervention, pv.JumpReLUAutoencoderIntervention,
)

_SAFE_INTERVENTIONS: dict[str, type] = {}

# Our own modules whose intervention classes are allow-listed: imported (never a path read from a
# file) before the first lookup, so e.g. a GRUN package loads without the caller importing GRUN first.
_OWN_INTERVENTION_CLASSES = (
    ("neumuter_interv.methods.grun.intervention", "GatedReFT"),
    ("neumuter_interv.methods.lunar.intervention", "ProjectionEdit"),
)


def class_string(cls: type) -> str:
    """The string pyvene writes into ``config.json`` for an intervention class."""
    return str(cls)


def register_safe_intervention(cls: type) -> None:
    """Allow ``load_intervenable`` to rebuild ``cls`` (an already-imported pyvene intervention class)."""
    if not (isinstance(cls, type) and issubclass(cls, pv.Intervention)):
        raise TypeError(f"{cls!r} is not a pyvene Intervention class")
    _SAFE_INTERVENTIONS[class_string(cls)] = cls


def safe_intervention_classes() -> dict[str, type]:
    """The allow-list: ``{config string: class}``."""
    _register_own_classes()
    return dict(_SAFE_INTERVENTIONS)


def _register_own_classes() -> None:
    for module, name in _OWN_INTERVENTION_CLASSES:
        register_safe_intervention(getattr(importlib.import_module(module), name))


for _cls in (FrozenScaling, HardConcreteGate, *_PYVENE_BUILTINS):
    register_safe_intervention(_cls)


def save_intervenable(pv_model: pv.IntervenableModel, directory: str | Path, with_pyvene_pickles: bool = False) -> Path:
    """Write ``config.json`` (pyvene's format) and ``interventions.safetensors`` into ``directory``.

    ``with_pyvene_pickles`` also keeps pyvene's ``intkey_*.bin`` files (tensor-only state dicts), so
    that plain ``pyvene.IntervenableModel.load`` reads the directory too.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # pyvene prints "Directory ... created"
        pv_model.save(str(directory))
    if not with_pyvene_pickles:
        for pickle in directory.glob("intkey_*.bin"):
            pickle.unlink()
    tensors = {
        f"{key}.{name}": tensor.detach().to("cpu").contiguous()
        for key, intervention in pv_model.interventions.items()
        for name, tensor in intervention.state_dict().items()
    }
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "pt", "writer": "neumuter_interv"})
    return directory


def load_intervenable(directory: str | Path, model: torch.nn.Module) -> pv.IntervenableModel:
    """Rebuild the interventions saved in ``directory`` on ``model``, safely, in eval mode."""
    directory = Path(directory)
    config = _read_config(directory)
    classes = [_allowed_class(name, directory) for name in config["intervention_types"]]
    if config.get("mode", "parallel") not in ("parallel", "serial"):
        raise NeuMuterError(f"{directory / CONFIG_FILE}: unknown mode {config['mode']!r} (pyvene's are parallel and serial)")
    tensors = _read_weights(directory)
    if getattr(getattr(model, "config", None), "model_type", None) in ARCHITECTURES:
        architecture_of(model)  # registers this exact model class with pyvene's "mlp_activation"
    try:
        pv_model = pv.IntervenableModel(
            pv.IntervenableConfig(
                representations=[pv.RepresentationConfig(*fields) for fields in config["representations"]],
                intervention_types=classes,
                mode=config.get("mode", "parallel"),
            ),  # no sorted_keys: pyvene derives the same order from the representations, without a warning
            model=model,
        )
    except (KeyError, AttributeError, ValueError, TypeError, IndexError, UnboundLocalError) as error:
        raise NeuMuterError(f"{directory / CONFIG_FILE} does not fit this {type(model).__name__}: {error!r}") from None
    dimensions = config.get("intervention_dimensions") or [None] * len(classes)
    for (key, intervention), dimension in zip(pv_model.interventions.items(), dimensions):
        if isinstance(intervention, FFNIntervention) and dimension is not None and dimension != intervention.width:
            raise NeuMuterError(f"{directory / CONFIG_FILE}: intervention {key} was saved for an FFN of width "
                                f"{dimension}, but this {type(model).__name__} has width {intervention.width}")
        if dimension is not None:
            intervention.set_interchange_dim(dimension)
        _restore(intervention, key, tensors, directory)
        intervention.train(False)
    pv_model.disable_model_gradients()
    return pv_model


def _read_config(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise NeuMuterError(f"{directory} is not a saved intervention: it has no {CONFIG_FILE}")
    config = read_json_file(path, str(path))
    types, representations = (config.get(k) if isinstance(config, dict) else None
                              for k in ("intervention_types", "representations"))
    if not (isinstance(types, list) and isinstance(representations, list) and len(types) == len(representations)
            and types and all(isinstance(t, str) for t in types)):
        raise NeuMuterError(f"{path} is not a pyvene intervention config: it needs equally long, non-empty "
                            "lists 'intervention_types' (strings) and 'representations'")
    field_count = len(pv.RepresentationConfig._fields)
    for fields in representations:
        if not (isinstance(fields, list) and 2 <= len(fields) <= field_count and isinstance(fields[0], int)
                and isinstance(fields[1], str)):
            raise NeuMuterError(f"{path}: malformed representation {fields!r} (expected [layer, component, ...])")
        named = dict(zip(pv.RepresentationConfig._fields, fields))
        if named.get("intervention_type") is not None or named.get("intervention") is not None:
            raise NeuMuterError(f"{path}: a representation names its own intervention ({fields!r}); refused")
    return config


def _allowed_class(name: str, directory: Path) -> type:
    _register_own_classes()
    if name not in _SAFE_INTERVENTIONS:
        raise NeuMuterError(
            f"{directory / CONFIG_FILE} names intervention class {name}, which is not in the allow-list; refusing to "
            "import it (if you trust it, import it yourself and call "
            "neumuter_interv.serialization.register_safe_intervention(cls))"
        )
    return _SAFE_INTERVENTIONS[name]


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    path = directory / WEIGHTS_FILE
    if path.is_file():
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise NeuMuterError(f"{path} is not a readable safetensors file: {error}") from None
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise NeuMuterError(
            f"{directory} holds its weights only as pickles ({', '.join(pickles)}); refusing to unpickle them. "
            f"Re-save with neumuter_interv.serialization.save_intervenable (writes {WEIGHTS_FILE})"
        )
    return {}


def _restore(intervention: pv.Intervention, key: str, tensors: dict[str, torch.Tensor], directory: Path) -> None:
    """Load the tensors saved under ``key``; a trainable intervention without any is an error."""
    prefix = f"{key}."
    own = {name[len(prefix):]: tensor for name, tensor in tensors.items() if name.startswith(prefix)}
    if not own:
        if isinstance(intervention, pv.TrainableIntervention):
            raise NeuMuterError(f"{directory / WEIGHTS_FILE} has no tensors for intervention {key}")
        return
    for name, tensor in own.items():  # a NaN gate would score as perfect forgetting: refuse it here
        if tensor.dtype.is_floating_point and not bool(torch.isfinite(tensor).all()):
            raise NeuMuterError(f"{directory / WEIGHTS_FILE}: {key}.{name} holds NaN or infinite values; refused")
    buffers = dict(intervention.named_buffers(recurse=False))
    if "source_representation" in own and "source_representation" not in buffers:
        # a constant source that pyvene rebuilt as a plain attribute: set it as pyvene's own load does
        intervention.source_representation = own.pop("source_representation")
        intervention.is_source_constant = True
    try:
        intervention.load_state_dict(own, strict=True)
        if isinstance(intervention, HardConcreteGate):
            HardConcreteParams(*intervention.hard_concrete_constants.tolist())
    except (RuntimeError, ValueError, NeuMuterError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise NeuMuterError(f"{directory / WEIGHTS_FILE}: tensors of {key} do not fit: {first_line}") from None
