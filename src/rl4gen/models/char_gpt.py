"""A character-level tokenizer and a tiny GPT built from transformers' own classes.

Both save to and load from a plain directory with ``save_pretrained`` / ``from_pretrained``
(``AutoTokenizer`` and ``AutoModelForCausalLM`` load them back), so everything downstream treats
them like any other local transformers model.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


def build_char_tokenizer(alphabet: Iterable[str]) -> PreTrainedTokenizerFast:
    """A tokenizer with one token per character of ``alphabet`` plus pad, end and unknown.

    Characters keep the order given, after the three special tokens (ids 0, 1, 2).
    """
    vocab: dict[str, int] = {PAD: 0, EOS: 1, UNK: 2}
    for ch in alphabet:
        if len(ch) != 1:
            raise ValueError(f"alphabet entries must be single characters, got {ch!r}")
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return _wrap(backend)


def _wrap(backend: Tokenizer) -> PreTrainedTokenizerFast:
    """A transformers tokenizer around ``backend``, with our special tokens, padding on the left."""
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        bos_token=EOS,
        padding_side="left",
    )


def build_tiny_gpt(
    vocab_size: int,
    *,
    n_positions: int = 64,
    n_embd: int = 128,
    n_layer: int = 2,
    n_head: int = 4,
    eos_token_id: int = 1,
    pad_token_id: int = 0,
) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 with no dropout (RL ratios assume a deterministic forward)."""
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        activation_function="gelu",  # torch-native GELU: several times faster than "gelu_new" on CPU
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    return GPT2LMHeadModel(config)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts`` (GPT-2's scheme, with a small vocabulary).

    Pad, end and unknown are ids 0, 1, 2, as for :func:`build_char_tokenizer`. Training is
    deterministic for the same texts and size.
    """
    from tokenizers import trainers

    backend = Tokenizer(models.BPE(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return _wrap(backend)
