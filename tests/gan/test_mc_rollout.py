"""SeqGAN's Monte Carlo per-token rewards on a tiny case computed by hand."""

from __future__ import annotations

import torch

from rl4gen.gan.seqgan import mc_rollout_rewards, position_baseline


def alternate(prefixes: list[str], n: int, max_new: int) -> list[str]:
    """A deterministic roll-out policy: completion k of every prefix is 'a'*max_new for even k,
    'b'*max_new for odd k."""
    return [("a" if k % 2 == 0 else "b") * max_new for _ in prefixes for k in range(n)]


def count_a(texts: list[str]) -> torch.Tensor:
    """A fixed 'discriminator': the number of a's in a finished sequence."""
    return torch.tensor([float(t.count("a")) for t in texts])


def test_per_token_rewards_by_hand() -> None:
    q = mc_rollout_rewards(["ba", "bbb"], alternate, count_a, num_rollouts=2, num_actions=4)
    # "ba":  t=1 prefix "b" -> "ba" (1), "bb" (0): 0.5; t=2 is the end: D("ba") = 1, and the
    #        end-of-sequence action after it gets D too; nothing after.
    # "bbb": t=1 prefix "b" -> "baa" (2), "bbb" (0): 1.0; t=2 prefix "bb" -> "bba" (1), "bbb" (0): 0.5;
    #        t=3: D("bbb") = 0.
    expected = torch.tensor([[0.5, 1.0, 1.0, 0.0], [1.0, 0.5, 0.0, 0.0]])
    assert torch.equal(q, expected)


def test_rollouts_complete_each_prefix_to_its_own_length() -> None:
    calls: list[tuple[list[str], int, int]] = []

    def record(prefixes: list[str], n: int, max_new: int) -> list[str]:
        calls.append((prefixes, n, max_new))
        return alternate(prefixes, n, max_new)

    seen: list[str] = []

    def score(texts: list[str]) -> torch.Tensor:
        seen.extend(texts)
        return count_a(texts)

    mc_rollout_rewards(["ba", "bbb"], record, score, num_rollouts=2, num_actions=4)
    assert calls == [(["b", "b"], 2, 2), (["bb"], 2, 1)]
    # Every scored text is a finished sequence of the length of the sequence it continues.
    assert seen == ["ba", "bbb", "ba", "bb", "baa", "bbb", "bba", "bbb"]


def test_position_baseline_centres_each_column() -> None:
    q = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    assert torch.equal(position_baseline(q, mask), torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))


def test_reinforce_loss_takes_per_token_advantages() -> None:
    from rl4gen.algorithms import Reinforce, StepTotals
    from rl4gen.config import ReinforceConfig
    from rl4gen.core.rollout import Rollout

    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv = torch.tensor([[1.0, 0.0, -1.0], [2.0, -2.0, 5.0]])
    batch = Rollout(
        actions=torch.zeros(2, 3, dtype=torch.long), mask=mask, logprobs=logp, group_ids=torch.zeros(2, dtype=torch.long),
        samples=["a", "b"], contexts=[None, None], advantages=adv,
    )
    out = Reinforce(ReinforceConfig(loss_type="dapo")).loss(logp, batch, StepTotals(2.0, 5.0, 3))
    # dapo: -(sum of A_t log p_t over real tokens) / 5 tokens = -(-1 + 0 + 3 - 1 + 1) / 5
    assert torch.isclose(out.loss, torch.tensor(-2.0 / 5))
