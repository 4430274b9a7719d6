"""Plain, deterministic torch training loops for the testbed's tiny models, and the probe that checks
what they memorized.

Everything random (initialisation, shuffling, masking) draws from generators seeded by the caller,
inside ``torch.random.fork_rng`` so the caller's global RNG state is left as it was. Batches are
right-padded with an attention mask and the loss ignores pads. Dropout is off: the testbed wants
memorization, and it keeps the weights a pure function of the seed.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPTNeoConfig,
    GPTNeoForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ..data import IGNORE_INDEX, pad_batch
from ..lm import autocast


def _batches(sequences: Sequence[list[int]], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of indices with similar lengths (less padding): shuffle, sort within windows of
    50 batches by length, cut into batches, shuffle the batches."""
    order = list(range(len(sequences)))
    rng.shuffle(order)
    window = 50 * batch_size
    batches = []
    for start in range(0, len(order), window):
        part = sorted(order[start:start + window], key=lambda i: len(sequences[i]))
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def _schedule(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over 5% of the steps, then cosine decay to 10% of the peak rate."""
    warmup = max(1, total_steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _fit(model: torch.nn.Module, make_batch, sequences: Sequence[list[int]], *, epochs: int,
         batch_size: int, lr: float, seed: int, progress: bool, desc: str, device: torch.device,
         dtype: str = "float32") -> None:
    """AdamW over ``epochs`` passes of ``sequences`` on ``device``, the forward in ``dtype`` (``lm.autocast``;
    weights and optimizer stay fp32); ``make_batch(rows, generator)`` returns model kwargs (CPU tensors: the
    masking draws stay on the CPU generator, whatever the device)."""
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(sequences) / batch_size)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    scheduler = _schedule(optimizer, epochs * steps_per_epoch)
    model.train()
    with tqdm(total=epochs * steps_per_epoch, desc=desc, disable=not progress, leave=False) as bar:
        for _ in range(epochs):
            for batch in _batches(sequences, batch_size, rng):
                inputs = make_batch([sequences[i] for i in batch], generator)
                with autocast(dtype, device):
                    loss = model(**{name: tensor.to(device) for name, tensor in inputs.items()}).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                bar.update()
    model.eval().cpu()


def train_causal_lm(config: GPTNeoConfig | None, sequences: Sequence[list[int]], pad_id: int, *, epochs: int,
                    batch_size: int, lr: float, seed: int, progress: bool, desc: str,
                    start_from: PreTrainedModel | None = None,
                    device: torch.device = torch.device("cpu"),  # noqa: B008
                    dtype: str = "float32") -> PreTrainedModel:
    """Train a causal LM on token-id sequences: a ``GPTNeoForCausalLM`` of ``config`` from scratch
    (initialised from ``seed``), or, with ``start_from`` (any causal LM; ``config`` unused), a copy of that
    model (left untouched) trained further, every weight. Forwards in ``dtype`` (``fit``). Returned on the CPU."""

    def make_batch(rows, _generator):
        batch = pad_batch(rows, pad_id)
        return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": batch.labels}

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPTNeoForCausalLM(config) if start_from is None else copy.deepcopy(start_from)
        _fit(model, make_batch, sequences, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
             progress=progress, desc=desc, device=device, dtype=dtype)
    return model


def train_masked_lm(config: BertConfig, sequences: Sequence[list[int]], tokenizer: PreTrainedTokenizerBase, *,
                    epochs: int, batch_size: int, lr: float, seed: int, progress: bool,
                    desc: str, device: torch.device = torch.device("cpu")) -> BertForMaskedLM:  # noqa: B008
    """Train a ``BertForMaskedLM`` from scratch with BERT's masking: 15% of the non-special tokens are
    predicted; of those 80% become ``[MASK]``, 10% a random token, 10% stay."""
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))

    def make_batch(rows, generator):
        batch = pad_batch(rows, tokenizer.pad_token_id)
        ids, mask = batch.input_ids, batch.attention_mask
        candidates = (mask == 1) & ~torch.isin(ids, special)
        draw = torch.rand(ids.shape, generator=generator)
        chosen = candidates & (draw < 0.15)
        labels = ids.masked_fill(~chosen, IGNORE_INDEX)
        inputs = ids.clone()
        inputs[chosen & (draw < 0.12)] = tokenizer.mask_token_id
        randomize = chosen & (draw >= 0.12) & (draw < 0.135)
        inputs[randomize] = torch.randint(len(tokenizer), ids.shape, generator=generator)[randomize]
        return {"input_ids": inputs, "attention_mask": mask, "labels": labels}

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForMaskedLM(config)
        _fit(model, make_batch, sequences, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
             progress=progress, desc=desc, device=device)
    return model
