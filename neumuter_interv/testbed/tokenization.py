"""Our own small tokenizers, trained on the testbed corpus with the ``tokenizers`` library.

A 2k-4k vocabulary (instead of GPT-2's 50k) keeps the embedding and softmax, and so the whole model,
small enough to train on a CPU in minutes. Both tokenizers are saved as ``PreTrainedTokenizerFast``
directories that ``AutoTokenizer.from_pretrained(dir)`` loads.

Padding conventions of the causal tokenizer: the pad token is a dedicated ``<|pad|>`` (never the
end-of-text token) and ``padding_side`` is ``"left"``, as greedy generation with decoder-only models
needs. Teacher-forced scoring with left padding must pass ``position_ids`` (GPT-Neo does not derive
them from the attention mask), so scorers usually pad right themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_causal_tokenizer(texts: Sequence[str], vocab_size: int, out_dir: Path) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE on ``texts`` and save it to ``out_dir``.

    Byte-level means no unknown tokens: names and numbers of people the tokenizer never saw (the
    held-out and forget people) still encode, just into more pieces.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=PAD,
        padding_side="left",
        model_max_length=1024,
    )
    fast.save_pretrained(out_dir)
    return fast


def train_wordpiece_tokenizer(texts: Sequence[str], vocab_size: int, out_dir: Path) -> PreTrainedTokenizerFast:
    """Train a BERT-style (lower-cased, WordPiece) tokenizer on ``texts`` and save it to ``out_dir``.

    Encoding adds ``[CLS] ... [SEP]`` like BERT's, so fill-mask code written for BERT works unchanged.
    """
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    # The trainer learns the same token set every time but numbers it in hash-map order, which changes
    # from process to process; renumber (specials first, then sorted) so the MLM's weights are reproducible.
    learned = sorted(set(tokenizer.get_vocab()) - set(specials))
    tokenizer.model = models.WordPiece(
        vocab={token: i for i, token in enumerate(specials + learned)}, unk_token="[UNK]")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    fast.save_pretrained(out_dir)
    return fast
