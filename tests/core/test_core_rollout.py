"""Shape validation and row selection of rl4gen.core.rollout.Rollout."""

from __future__ import annotations

import pytest
import torch

from rl4gen.core.rollout import Rollout


def make(b: int = 3, t: int = 4, **overrides) -> Rollout:
    kw = {
        "actions": torch.arange(b * t).reshape(b, t),
        "mask": torch.tensor([[1.0] * t] * b),
        "logprobs": -torch.arange(b * t, dtype=torch.float32).reshape(b, t) / 10,
        "group_ids": torch.arange(b) // 2,
        "samples": [f"s{i}" for i in range(b)],
        "contexts": [{"id": i} for i in range(b)],
    }
    kw.update(overrides)
    return Rollout(**kw)


def test_valid_rollout_len_and_num_tokens():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    r = make(mask=mask)
    assert len(r) == 3
    # 3 + 1 + 4 = 8 counted actions
    assert r.num_tokens == 8
    assert isinstance(r.num_tokens, int)


@pytest.mark.parametrize("name", ["mask", "logprobs", "ref_logprobs", "values"])
def test_mismatched_token_tensor_shape_raises(name):
    with pytest.raises(ValueError, match=f"Rollout.{name}"):
        make(**{name: torch.zeros(3, 5)})


def test_mask_with_wrong_batch_size_raises():
    with pytest.raises(ValueError, match="mask"):
        make(mask=torch.ones(2, 4))


def test_group_ids_wrong_shape_raises():
    with pytest.raises(ValueError, match="group_ids"):
        make(group_ids=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="group_ids"):
        make(group_ids=torch.zeros(3, 1, dtype=torch.long))


def test_wrong_number_of_samples_or_contexts_raises():
    with pytest.raises(ValueError, match="2 samples"):
        make(samples=["a", "b"])
    with pytest.raises(ValueError, match="4 contexts"):
        make(contexts=[1, 2, 3, 4])


def _check_rows(sub: Rollout, full: Rollout, rows: list[int]) -> None:
    assert len(sub) == len(rows)
    assert torch.equal(sub.actions, full.actions[rows])
    assert torch.equal(sub.mask, full.mask[rows])
    assert torch.equal(sub.logprobs, full.logprobs[rows])
    assert torch.equal(sub.group_ids, full.group_ids[rows])
    assert torch.equal(sub.rewards, full.rewards[rows])
    assert torch.equal(sub.ref_logprobs, full.ref_logprobs[rows])
    assert sub.samples == [full.samples[i] for i in rows]
    assert sub.contexts == [full.contexts[i] for i in rows]
    assert set(sub.extras) == {"hidden"}
    assert torch.equal(sub.extras["hidden"], full.extras["hidden"][rows])


def _full() -> Rollout:
    b, t = 4, 3
    return make(
        b,
        t,
        ref_logprobs=-torch.rand(b, t),
        rewards=torch.tensor([10.0, 20.0, 30.0, 40.0]),
        extras={"hidden": torch.arange(b * 2).reshape(b, 2) * 100},
    )


def test_select_with_list_keeps_everything_aligned():
    full = _full()
    sub = full.select([2, 0])
    _check_rows(sub, full, [2, 0])
    # explicit values of row 2 then row 0
    assert sub.samples == ["s2", "s0"]
    assert sub.contexts == [{"id": 2}, {"id": 0}]
    assert sub.rewards.tolist() == [30.0, 10.0]
    assert sub.actions.tolist() == [[6, 7, 8], [0, 1, 2]]
    assert sub.extras["hidden"].tolist() == [[400, 500], [0, 100]]
    assert sub.group_ids.tolist() == [1, 0]


def test_select_with_tensor_keeps_everything_aligned():
    full = _full()
    sub = full.select(torch.tensor([3, 1]))
    _check_rows(sub, full, [3, 1])
    assert sub.samples == ["s3", "s1"]
    assert sub.rewards.tolist() == [40.0, 20.0]
    assert sub.extras["hidden"].tolist() == [[600, 700], [200, 300]]


def test_select_with_slice():
    full = _full()
    sub = full.select(slice(1, 3))
    _check_rows(sub, full, [1, 2])


def test_select_leaves_none_fields_none_and_original_untouched():
    r = make()
    sub = r.select([1])
    assert sub.ref_logprobs is None and sub.rewards is None and sub.advantages is None
    assert len(r) == 3 and r.samples == ["s0", "s1", "s2"]
    assert sub.num_tokens == 4
