"""The paper's utility benchmarks (Table 2's right half, Appendix B), read from the knowledge-unlearning
validation files as they are, scored with the metrics of ``metrics``.

``--utility DIR`` names a directory laid out as knowledge-unlearning's ``validation_data/`` (the shared
copy is ``../shared/data/knowledge-unlearning/validation_data``):

* ``pile.csv``, ``wikitext.csv`` (column ``text``): perplexity over the first ``ppl_tokens`` tokens of the
  first ``ppl_texts`` non-empty texts (knowledge-unlearning truncates each text to its input length);
* ``lambada.csv`` (column ``text``): last-word accuracy (``metrics.lambada_accuracy``);
* ``pubmed_qa.csv`` (``abstract``, ``question``, ``final_decision``): the prompt "Context: {abstract}\\n
  Question: {question}\\nAnswer:" and the choices " yes" / " maybe" / " no" scored by log-likelihood
  (``metrics.multiple_choice_accuracy``), as knowledge-unlearning's ``Datasets.py`` builds them;
* ``wizard_of_wikipedia.json``, ``wizard_of_internet.json``, ``blended_skill_talk.json``,
  ``empathetic_dialogues.json`` (``{"text": {"0": [turn, ...], ...}}``, what pandas' ``to_json`` wrote):
  every turn but the last becomes the prompt "User 1: ...\\nUser 2: ...\\nUser k:", the last (normalized by
  ``normalize_reply``) is the reference reply; F1 of the greedy reply and CE of the reference
  (``metrics.dialogue_scores``).

Each task takes the FIRST rows of its file (``UtilityConfig`` says how many): a fixed, documented subset
that keeps a CPU evaluation of a 135M model to about a minute in bf16; the paper scores whole sets on
GPUs, and ``--utility-samples`` raises the counts.
Departures from knowledge-unlearning, each for a stated reason: the reference reply follows the prompt's
"User k:" after a space (the turns of the prompt are written that way; knowledge-unlearning appends it
with none); long contexts are cut from the left to ``max_length`` tokens (the part next to what is scored).
The paper's ACC averages nine tasks; here ``classification_acc`` averages the two with local files
(LAMBADA, PubMedQA), and the lm-eval-harness route (``lm_eval_tasks``) runs the rest where they exist.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import metrics
from .data import model_context_length, read_csv_records, read_text_file, read_texts
from .errors import NeuMuterError
from .lm import as_language_model
from .validation import check_number

PPL_SETS = ("pile", "wikitext")
DIALOGUE_SETS = ("wizard_of_wikipedia", "wizard_of_internet", "blended_skill_talk", "empathetic_dialogues")
TASKS = (*PPL_SETS, "lambada", "pubmedqa", *DIALOGUE_SETS)
FILES = {"pile": "pile.csv", "wikitext": "wikitext.csv", "lambada": "lambada.csv", "pubmedqa": "pubmed_qa.csv",
         **{name: f"{name}.json" for name in DIALOGUE_SETS}}
PUBMEDQA_CHOICES = (" yes", " maybe", " no")


@dataclass
class UtilityConfig:
    """Which utility tasks to run on how many rows of each file (the first ones)."""

    directory: str
    tasks: tuple[str, ...] = TASKS
    ppl_texts: int = 16
    ppl_tokens: int = 256
    lambada_samples: int = 64
    pubmedqa_samples: int = 16
    dialogues_per_set: int = 8
    reply_tokens: int = 32  # knowledge-unlearning generates 32 new tokens
    max_length: int = 256  # tokens of a scored context + continuation (contexts cut from the left)
    batch_size: int = 8

    def __post_init__(self):
        self.tasks = tuple(self.tasks)
        unknown = [task for task in self.tasks if task not in TASKS]
        if unknown or not self.tasks:
            raise NeuMuterError(f"unknown utility task(s) {', '.join(map(repr, unknown)) or '(none given)'}: "
                                f"choose from {', '.join(TASKS)}")
        for name in ("ppl_texts", "ppl_tokens", "lambada_samples", "pubmedqa_samples", "dialogues_per_set",
                     "reply_tokens", "batch_size"):
            check_number(name, getattr(self, name), minimum=1, integer=True)
        check_number("max_length", self.max_length, minimum=self.reply_tokens + 2, integer=True)


@dataclass
class UtilityData:
    """The prompts and references of each task, read once; ``fingerprint`` keys cached scores."""

    config: UtilityConfig
    ppl: dict[str, list[str]] = field(default_factory=dict)
    lambada: list[str] = field(default_factory=list)
    pubmedqa: list[tuple[str, int]] = field(default_factory=list)  # (prompt, index of the answer)
    dialogues: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # set -> (prompt, reply)
    fingerprint: str = ""


def load_utility(config: UtilityConfig) -> UtilityData:
    """Read every task's file, refusing a missing directory or file (one line naming it) before any scoring."""
    directory = Path(config.directory)
    if not directory.is_dir():
        raise NeuMuterError(f"utility directory {str(directory)!r} does not exist or is not a directory (it should "
                            f"hold {', '.join(FILES[t] for t in config.tasks)})")
    data = UtilityData(config)
    digest = hashlib.sha256(json.dumps(asdict(config) | {"directory": None}, sort_keys=True).encode())
    for task in config.tasks:
        path = directory / FILES[task]
        digest.update(path.name.encode() + hashlib.sha256(path.read_bytes() if path.is_file() else b"").digest())
        if task in PPL_SETS:
            data.ppl[task] = [t for t in read_texts(path, "text", f"{task} utility") if t.strip()][:config.ppl_texts]
        elif task == "lambada":
            data.lambada = list(read_texts(path, "text", "LAMBADA utility"))[:config.lambada_samples]
        elif task == "pubmedqa":
            data.pubmedqa = [pubmedqa_prompt(row) for row in
                             read_csv_records(path, ("abstract", "question", "final_decision"),
                                              "PubMedQA utility")[:config.pubmedqa_samples]]
        else:
            data.dialogues[task] = [dialogue_prompt(turns) for turns in
                                    read_dialogues(path)[:config.dialogues_per_set]]
    data.fingerprint = digest.hexdigest()[:20]
    return data


def read_dialogues(path: Path) -> list[list[str]]:
    """The dialogues of a knowledge-unlearning JSON file (``{"text": {"0": [turns], ...}}``), in index order;
    dialogues of fewer than two turns have no reply to score and are left out."""
    label = f"dialogue utility file {str(path)!r}"
    try:
        records = json.loads(read_text_file(path, label, "a .json file"))["text"]
        dialogues = [records[key] for key in sorted(records, key=int)]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise NeuMuterError(f"{label} is not a knowledge-unlearning dialogue file "
                            '({"text": {"0": [turn, ...], ...}})') from None
    if not all(isinstance(d, list) and all(isinstance(t, str) for t in d) for d in dialogues):
        raise NeuMuterError(f"{label}: every dialogue must be a list of turns (strings)")
    usable = [d for d in dialogues if len(d) >= 2]
    if not usable:
        raise NeuMuterError(f"{label} holds no dialogue of two or more turns")
    return usable


def pubmedqa_prompt(row: dict[str, str]) -> tuple[str, int]:
    """knowledge-unlearning's PubMedQA prompt and the index of the answer among ``PUBMEDQA_CHOICES``."""
    decision = row["final_decision"].strip().lower()
    if decision not in ("yes", "maybe", "no"):
        raise NeuMuterError(f"PubMedQA final_decision must be yes, maybe or no, got {row['final_decision']!r}")
    return (f"Context: {row['abstract']}\nQuestion: {row['question']}\nAnswer:",
            [choice.strip() for choice in PUBMEDQA_CHOICES].index(decision))


def dialogue_prompt(turns: list[str]) -> tuple[str, str]:
    """(prompt, reference reply) as knowledge-unlearning's ``create_dialogue_prompt``: the turns but the last,
    normalized, as alternating "User 1: ..." / "User 2: ..." lines, then the next speaker's "User k:"; the
    reply is the normalized last turn, after a space."""
    lines = [f"User {1 + i % 2}: {normalize_reply(turn)}" for i, turn in enumerate(turns[:-1])]
    return "\n".join(lines) + f"\nUser {1 + (len(turns) - 1) % 2}:", " " + normalize_reply(turns[-1])


_PUNCTUATION_SPACING = ((" .", "."), (" ,", ","), (" ?", "?"), (" !", "!"), (" ' ", "'"))


def normalize_reply(text: str) -> str:
    """ParlAI's ``normalize_reply`` (version 2), which knowledge-unlearning applies to every turn: lower
    case with sentences, "I" and its contractions capitalized, no space before punctuation, and a final
    period when the turn ends without one."""
    text = text.lower()
    for spaced, tight in _PUNCTUATION_SPACING:
        text = text.replace(tight, spaced).replace("  ", " ")
    tokens = text.split(" ")
    for i, token in enumerate(tokens):
        if i == 0 or token in ("i", "i'm", "i've", "i'll", "i'd"):
            tokens[i] = token[:1].upper() + token[1:]
        elif token and token in "?.!" and i < len(tokens) - 1:
            tokens[i + 1] = tokens[i + 1][:1].upper() + tokens[i + 1][1:]
    text = " " + " ".join(tokens) + " "
    for spaced, tight in _PUNCTUATION_SPACING:
        text = text.replace(spaced, tight)
    text = text.strip().replace("  ", " ")
    if text and text[-1] not in "!.?)\"'":
        text += "."
    return text


def fitted(config: UtilityConfig, model) -> UtilityConfig:
    """``config`` with its sequence lengths cut to the model's context (a model of 128 positions scores
    128-token windows and contexts): what fits is taken rather than refused."""
    context = model_context_length(as_language_model(model))
    if context is None:
        return config
    cut = copy.copy(config)  # not ``replace``: a context under reply_tokens + 2 is check_utility's to refuse
    cut.ppl_tokens, cut.max_length = min(config.ppl_tokens, context), min(config.max_length, context)
    return cut


def check_utility(model, tokenizer, data: UtilityData) -> None:
    """Refuse, before any scoring, what a task cannot score on this model, naming the file: a context too
    short for a dialogue reply, perplexity files without a text of two tokens, a LAMBADA text without a last
    word, an answer or reply that leaves no room for its context."""
    config = fitted(data.config, model)
    directory = Path(config.directory)

    def where(task: str) -> str:
        return str(directory / FILES[task])

    if data.dialogues and config.max_length < config.reply_tokens + 2:
        raise NeuMuterError(f"the model's context of {config.max_length} tokens is too short for the dialogue "
                            f"tasks' {config.reply_tokens}-token replies; leave them out of the utility tasks")
    for name, texts in data.ppl.items():
        if not any(len(tokenizer(text)["input_ids"]) >= 2 for text in texts):
            raise NeuMuterError(f"{where(name)}: no text of two or more tokens to score perplexity on")
    pairs = {"lambada": [metrics.split_last_word_of(text, f"{where('lambada')} row {i}")
                         for i, text in enumerate(data.lambada)],
             "pubmedqa": [(prompt, choice) for prompt, _ in data.pubmedqa for choice in PUBMEDQA_CHOICES],
             **{name: list(dialogues) for name, dialogues in data.dialogues.items()}}
    for task, items in pairs.items():
        for i, (_, answer) in enumerate(items):
            length = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
            if length >= config.max_length:
                raise NeuMuterError(f"{where(task)} row {i}: its answer is {length} tokens, which leaves no room for "
                                    f"its context in the {config.max_length} tokens the model scores")


def evaluate_utility(model, tokenizer, data: UtilityData) -> dict[str, float]:
    """Every configured task's score, flat: ``<set>_ppl``, ``lambada_acc``, ``pubmedqa_acc``,
    ``<set>_f1`` / ``<set>_ce`` per dialogue set, and the paper's averages ``classification_acc``,
    ``dialogue_f1``, ``dialogue_ce`` over the tasks run. Rates and F1 are fractions in [0, 1]."""
    config, scores = fitted(data.config, model), {}
    settings = {"batch_size": config.batch_size}
    for name, texts in data.ppl.items():
        ids = [tokenizer(text)["input_ids"][:config.ppl_tokens] for text in texts]
        scores[f"{name}_ppl"] = metrics.perplexity(model, None, [seq for seq in ids if len(seq) >= 2], **settings)
    accuracies = []
    if data.lambada:
        scores["lambada_acc"] = float(metrics.lambada_accuracy(model, tokenizer, data.lambada,
                                                               max_length=config.max_length, **settings).mean())
        accuracies.append(scores["lambada_acc"])
    if data.pubmedqa:
        prompts, answers = zip(*data.pubmedqa)
        scores["pubmedqa_acc"] = float(metrics.multiple_choice_accuracy(
            model, tokenizer, prompts, [PUBMEDQA_CHOICES] * len(prompts), answers, max_length=config.max_length,
            **settings).mean())
        accuracies.append(scores["pubmedqa_acc"])
    if accuracies:
        scores["classification_acc"] = sum(accuracies) / len(accuracies)
    if data.dialogues:  # every set's dialogues in one call: one greedy decoding loop per batch, not per set
        names = [name for name, pairs in data.dialogues.items() for _ in pairs]
        prompts, replies = zip(*(pair for pairs in data.dialogues.values() for pair in pairs))
        result = metrics.dialogue_scores(model, tokenizer, prompts, replies, max_new_tokens=config.reply_tokens,
                                         max_length=config.max_length, **settings)
        for name in data.dialogues:
            rows = [i for i, owner in enumerate(names) if owner == name]
            scores[f"{name}_f1"] = float(result["f1"][rows].mean())
            scores[f"{name}_ce"] = float(torch.cat([result["reply_losses"][i] for i in rows]).mean())
        scores["dialogue_f1"] = sum(scores[f"{n}_f1"] for n in data.dialogues) / len(data.dialogues)
        scores["dialogue_ce"] = sum(scores[f"{n}_ce"] for n in data.dialogues) / len(data.dialogues)
    return scores


UTILITY_COLUMNS = (("classification_acc", "ACC"), ("dialogue_f1", "F1"), ("dialogue_ce", "CE"),
                   ("pile_ppl", "Pile PPL"), ("wikitext_ppl", "WikiText PPL"))
"""The utility columns of a Table-2-shaped report: (score key, header)."""

