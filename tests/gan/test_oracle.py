"""The synthetic oracle: deterministic for a seed, a proper likelihood, texts round-trip."""

from __future__ import annotations

import math

import torch

from rl4gen.gan.oracle import OracleLSTM, oracle_data, text_tokens, token_text


def test_same_seed_same_oracle_and_data() -> None:
    a, b = OracleLSTM(50, 8, 16, 16, seed=3), OracleLSTM(50, 8, 16, 16, seed=3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert torch.equal(oracle_data(a, 64, seed=1), oracle_data(b, 64, seed=1))
    c = OracleLSTM(50, 8, 16, 16, seed=4)
    assert not torch.equal(a.head.weight, c.head.weight)
    assert not torch.equal(oracle_data(a, 64, seed=1), oracle_data(a, 64, seed=2))


def test_nll_is_the_oracles_own_likelihood() -> None:
    oracle = OracleLSTM(30, 6, 8, 8, seed=0)
    data = oracle_data(oracle, 2000, seed=1)
    assert data.shape == (2000, 6) and int(data.max()) < 30
    own = float(oracle.nll(data).mean())
    uniform = torch.randint(0, 30, (2000, 6), generator=torch.Generator().manual_seed(0))
    # Its own samples are likelier than uniform noise, and than the uniform model (log V).
    assert own < float(oracle.nll(uniform).mean())
    assert own < math.log(30)
    # The first token's NLL matches its softmax by hand.
    start = oracle.embed(torch.tensor([[30]]))
    h, _ = oracle.lstm(start)
    logp = torch.log_softmax(oracle.head(h[0, 0]), dim=-1)
    one = torch.tensor([[7, 1, 2, 3, 4, 5]])
    mask = torch.tensor([[1.0, 0, 0, 0, 0, 0]])
    assert torch.allclose(oracle.nll(one, mask), -logp[7].reshape(1), atol=1e-5)


def test_texts_round_trip_and_score() -> None:
    oracle = OracleLSTM(20, 5, 8, 8, seed=0)
    data = oracle_data(oracle, 4, seed=1)
    texts = [token_text(row) for row in data]
    assert [text_tokens(t) for t in texts] == data.tolist()
    assert torch.allclose(oracle.nll_of_texts(texts), oracle.nll(data))
