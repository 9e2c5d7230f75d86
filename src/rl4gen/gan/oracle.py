"""The synthetic oracle of SeqGAN (Yu et al., 2017, section "Synthetic Data Experiments").

A randomly initialised LSTM (every weight drawn from N(0, 1) with a fixed seed) stands for the
real world: it generates the training data, and because its probabilities are known, the quality
of any generator's samples is measured exactly as their negative log-likelihood under it
(``oracle NLL``, per token; lower is better). The paper uses a vocabulary of 5,000 tokens,
sequences of 20 and 32-unit embeddings and hidden state; the same seed always gives the same
oracle.

Tokens travel through the rest of rl4gen as text, one character per token (``token_text``): a
character-level tokenizer then makes the vocabulary of a transformers causal LM.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

#: Oracle token ``i`` is written as the character ``chr(TOKEN_BASE + i)`` (CJK ideographs: single
#: code points, no whitespace, no combining marks, more than 20,000 of them).
TOKEN_BASE = 0x4E00
MAX_VOCAB = 20_000


def token_alphabet(vocab_size: int) -> list[str]:
    """The characters that write tokens ``0 .. vocab_size - 1``."""
    if not 2 <= vocab_size <= MAX_VOCAB:
        raise ValueError(f"vocab_size must be between 2 and {MAX_VOCAB}, got {vocab_size}")
    return [chr(TOKEN_BASE + i) for i in range(vocab_size)]


def token_text(tokens: Sequence[int] | Tensor) -> str:
    """A token sequence as text (one character per token)."""
    values = tokens.tolist() if isinstance(tokens, Tensor) else tokens
    return "".join(chr(TOKEN_BASE + int(t)) for t in values)


def text_tokens(text: str) -> list[int]:
    """The tokens of a text written by :func:`token_text`; other characters raise ValueError."""
    out = [ord(c) - TOKEN_BASE for c in text]
    if any(t < 0 or t >= MAX_VOCAB for t in out):
        raise ValueError(f"{text!r} is not a token sequence")
    return out


class OracleLSTM(nn.Module):
    """A fixed, randomly initialised LSTM language model over ``vocab_size`` tokens.

    The first input is a start vector (an extra embedding row), as the paper's start token.
    """

    def __init__(self, vocab_size: int = 5000, seq_len: int = 20, embed_dim: int = 32, hidden_dim: int = 32, seed: int = 0) -> None:
        super().__init__()
        token_alphabet(vocab_size)  # validates the size
        self.vocab_size, self.seq_len, self.seed = vocab_size, seq_len, seed
        self.embed = nn.Embedding(vocab_size + 1, embed_dim)  # row vocab_size = start
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.head = nn.Linear(hidden_dim, vocab_size)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():  # named_parameters order is fixed, so the oracle is too
                nn.init.normal_(p, 0.0, 1.0, generator=gen)
        self.requires_grad_(False)
        self.eval()

    def _logits(self, tokens: Tensor) -> Tensor:  # (N, L) -> (N, L, V): logits of each token
        start = torch.full((tokens.shape[0], 1), self.vocab_size, dtype=torch.long, device=tokens.device)
        inputs = torch.cat([start, tokens[:, :-1]], dim=1)  # (N, L)
        hidden, _ = self.lstm(self.embed(inputs))  # (N, L, H)
        return self.head(hidden)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, batch_size: int = 2048) -> Tensor:  # (n, L)
        """``n`` sequences of ``seq_len`` tokens."""
        chunks = []
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            tok = torch.full((m, 1), self.vocab_size, dtype=torch.long)
            state = None
            out = []
            for _ in range(self.seq_len):
                hidden, state = self.lstm(self.embed(tok), state)
                probs = torch.softmax(self.head(hidden[:, -1]), dim=-1)  # (m, V)
                tok = torch.multinomial(probs, 1, generator=generator)  # (m, 1)
                out.append(tok)
            chunks.append(torch.cat(out, dim=1))
        return torch.cat(chunks, dim=0)

    @torch.no_grad()
    def nll(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:  # (N, L) -> (N,)
        """Mean per-token negative log-likelihood of each sequence (over ``mask``'s tokens)."""
        logits = self._logits(tokens)
        nll = nn.functional.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")  # (N, L)
        if mask is None:
            return nll.mean(dim=1)
        m = mask.to(nll.dtype)
        return (nll * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)

    def nll_of_texts(self, texts: Sequence[str]) -> Tensor:  # (N,)
        """Oracle NLL of texts written by :func:`token_text`; tokens past ``seq_len`` are ignored
        and a text shorter than ``seq_len`` is scored on the tokens it has."""
        tokens = torch.zeros((len(texts), self.seq_len), dtype=torch.long)
        mask = torch.zeros((len(texts), self.seq_len))
        for i, text in enumerate(texts):
            row = [t if t < self.vocab_size else 0 for t in text_tokens(text)[: self.seq_len]]
            tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1.0
        return self.nll(tokens, mask)


def oracle_data(oracle: OracleLSTM, n: int, seed: int) -> Tensor:  # (n, L)
    """``n`` sequences drawn from ``oracle`` with their own seed (train, validation and test sets
    use different seeds)."""
    return oracle.sample(n, torch.Generator().manual_seed(seed))
