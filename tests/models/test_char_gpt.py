"""The character tokenizer and tiny GPT of rl4gen.models.char_gpt, and their save/load round trips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rl4gen.models.char_gpt import EOS, PAD, UNK, build_char_tokenizer, build_tiny_gpt
from rl4gen.tasks.arithmetic import ALPHABET

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer(ALPHABET)


# ------------------------------------------------------------------------------ tokenizer


@pytest.mark.parametrize("text", ["0", "12+34=46", "9-7=2", "=+-0123456789", "000111"])
def test_encode_decode_round_trip(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False).input_ids
    # One token per character, each a regular (non-special) id.
    assert len(ids) == len(text)
    assert all(i >= 3 for i in ids)
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_character_ids_follow_alphabet_order(tokenizer):
    ids = tokenizer(ALPHABET, add_special_tokens=False).input_ids
    assert ids == list(range(3, 3 + len(ALPHABET)))
    assert len(tokenizer) == 3 + len(ALPHABET)


def test_special_token_ids(tokenizer):
    assert tokenizer.pad_token_id == 0
    assert tokenizer.eos_token_id == 1
    assert tokenizer.unk_token_id == 2
    assert tokenizer.bos_token_id == 1
    assert tokenizer.convert_tokens_to_ids([PAD, EOS, UNK]) == [0, 1, 2]


def test_special_tokens_are_skipped_when_decoding(tokenizer):
    ids = tokenizer("1+1=2", add_special_tokens=False).input_ids
    assert tokenizer.decode([0, *ids, 1, 0, 2], skip_special_tokens=True) == "1+1=2"


def test_unknown_character_maps_to_unk(tokenizer):
    ids = tokenizer("1a2", add_special_tokens=False).input_ids
    one, two = tokenizer("12", add_special_tokens=False).input_ids
    assert ids == [one, tokenizer.unk_token_id, two]
    assert tokenizer("x", add_special_tokens=False).input_ids == [2]


def test_left_padding(tokenizer):
    assert tokenizer.padding_side == "left"
    enc = tokenizer(["1+1=", "12+34="], padding=True, add_special_tokens=False, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape == (2, 6)
    assert ids[0, :2].tolist() == [0, 0]
    assert mask[0].tolist() == [0, 0, 1, 1, 1, 1]
    assert mask[1].tolist() == [1] * 6
    assert ids[0, 2:].tolist() == tokenizer("1+1=", add_special_tokens=False).input_ids


def test_duplicate_alphabet_entries_keep_first_id():
    tok = build_char_tokenizer("1121")
    assert len(tok) == 5
    assert tok("12", add_special_tokens=False).input_ids == [3, 4]


@pytest.mark.parametrize("alphabet", [["1", "23"], ["ab"], ["1", ""]])
def test_non_single_character_entry_raises(alphabet):
    with pytest.raises(ValueError, match="single characters"):
        build_char_tokenizer(alphabet)


def test_save_and_autotokenizer_load_gives_identical_encodings(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(str(tmp_path))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    texts = ["1+1=", "12+34=46", "9-x=", "", "0"]
    for text in texts:
        assert loaded(text, add_special_tokens=False).input_ids == tokenizer(
            text, add_special_tokens=False
        ).input_ids
    a = tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt")
    b = loaded(texts, padding=True, add_special_tokens=False, return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(a["attention_mask"], b["attention_mask"])
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.unk_token_id) == (0, 1, 2)
    assert loaded.padding_side == "left"
    ids = tokenizer("12+34=46", add_special_tokens=False).input_ids
    assert loaded.decode(ids) == "12+34=46"
    assert len(loaded) == len(tokenizer)


# ------------------------------------------------------------------------------ model


def _tiny(vocab: int = 16) -> nn.Module:
    torch.manual_seed(1)
    return build_tiny_gpt(vocab, n_positions=16, n_embd=16, n_layer=1, n_head=2)


def test_tiny_gpt_has_no_dropout_and_given_sizes():
    model = _tiny(16)
    cfg = model.config
    assert cfg.resid_pdrop == 0.0 and cfg.embd_pdrop == 0.0 and cfg.attn_pdrop == 0.0
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            assert module.p == 0.0
    assert cfg.vocab_size == 16
    assert model.get_input_embeddings().weight.shape == (16, 16)
    assert cfg.n_positions == 16 and cfg.n_layer == 1 and cfg.n_head == 2
    assert (cfg.eos_token_id, cfg.pad_token_id, cfg.bos_token_id) == (1, 0, 1)
    logits = model(torch.tensor([[3, 4, 5]])).logits
    assert logits.shape == (1, 3, 16)


def test_tiny_gpt_forward_is_deterministic_in_train_mode():
    model = _tiny(16)
    model.train()
    x = torch.tensor([[3, 4, 5, 6]])
    assert torch.equal(model(x).logits, model(x).logits)


def test_tiny_gpt_vocab_matches_tokenizer(tokenizer):
    model = build_tiny_gpt(len(tokenizer), n_positions=8, n_embd=8, n_layer=1, n_head=1)
    assert model.config.vocab_size == len(tokenizer) == 16


def test_tiny_gpt_save_and_automodel_load_gives_identical_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    model = _tiny(16).eval()
    model.save_pretrained(str(tmp_path))
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    assert type(loaded).__name__ == "GPT2LMHeadModel"
    x = torch.tensor([[3, 4, 15, 5, 1], [0, 0, 6, 7, 8]])
    attn = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    with torch.no_grad():
        a = model(input_ids=x, attention_mask=attn).logits
        b = loaded(input_ids=x, attention_mask=attn).logits
    assert torch.equal(a, b)
