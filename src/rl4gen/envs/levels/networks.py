"""Policy networks over one-hot level observations ``(T, H, W)`` for Stable-Baselines3.

- ``LevelCNN``: a features extractor (strided convolutions, then a linear layer); SB3's MLP heads
  sit on top. Used by narrow and turtle, and by wide with SB3's factorised ``MultiDiscrete``.
- ``FullyConvPolicy``: PCGRL's wide agent. Convolutions at full resolution (with a pooled global
  context added back to every cell, so each cell sees the whole map) give per-cell tile logits,
  the action logits of ``FlatWideAction``'s ``Discrete(T·H·W)``; the value is a linear function of
  the pooled features. Writing the tile a cell already has (a no-op) is masked out.
- ``symmetric_logits``: a ``FullyConvPolicy``'s action logits averaged over the map's rotations
  and reflections (test-time augmentation: an exactly equivariant policy from one that is not).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

__all__ = ["FullyConvExtractor", "FullyConvPolicy", "LevelCNN", "grid_symmetries", "symmetric_logits"]


class LevelCNN(BaseFeaturesExtractor):
    """Three 3×3 convolutions (32, 64, 64 channels; the last two with stride 2), then a linear
    layer to ``features_dim``. The policy and value heads of SB3 sit on top."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 256) -> None:
        super().__init__(observation_space, features_dim)
        channels = observation_space.shape[0]
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n = self.cnn(torch.zeros(1, *observation_space.shape)).shape[1]
        self.linear = nn.Sequential(nn.Linear(n, features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.linear(self.cnn(observations.float()))  # (B, T, H, W) -> (B, features_dim)


class FullyConvExtractor(BaseFeaturesExtractor):
    """``(B, T + F, H, W)`` → per-cell features ``(B, (C + T + L)·H·W)``, flattened for SB3: ``C``
    learned channels, then the observation's ``T`` tile channels (the tile under each cell, for
    the no-op mask), then its last ``L`` = ``lookahead_planes`` planes as they are (for the logit
    head). ``F`` = ``feature_planes`` extra input planes after the tiles (``GoalFeatures``; the
    lookahead planes among them).

    Two 3×3 convolutions (``channels`` wide, padding 1, so the map keeps its size), then the
    channel means over the map through a linear layer are added to every cell before a third
    convolution: local patterns plus the global state (how many regions, how long the path).

    With ``attention_layers`` > 0, that many pre-norm transformer encoder layers (4 heads,
    feed-forward ``2 × channels``, no dropout) follow, the cells as tokens with a learned position
    embedding: every cell can weigh every other one by what is there (which crate stands in
    which one's way), where the pooled context only sees map totals."""

    def __init__(self, observation_space: gym.spaces.Box, channels: int = 32, feature_planes: int = 0,
                 attention_layers: int = 0, lookahead_planes: int = 0) -> None:
        planes, height, width = observation_space.shape
        tiles = planes - feature_planes
        super().__init__(observation_space, (channels + tiles + lookahead_planes) * height * width)
        self.tiles, self.lookahead_planes = tiles, lookahead_planes
        self.local = nn.Sequential(
            nn.Conv2d(planes, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
        )
        self.context = nn.Sequential(nn.Linear(channels, channels), nn.ReLU())
        self.out = nn.Conv2d(channels, channels, 3, padding=1)
        self.attention = nn.ModuleList(
            nn.TransformerEncoderLayer(channels, nhead=4, dim_feedforward=2 * channels, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(attention_layers)
        )
        self.position = nn.Parameter(torch.zeros(1, height * width, channels)) if attention_layers else None

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = observations.float()
        h = self.local(x)
        g = self.context(h.mean(dim=(2, 3)))
        h = torch.relu(self.out(h) + g[:, :, None, None])
        if self.position is not None:
            batch, channels, height, width = h.shape
            tokens = h.flatten(2).transpose(1, 2) + self.position  # (B, H·W, C)
            for layer in self.attention:
                tokens = layer(tokens)
            h = tokens.transpose(1, 2).reshape(batch, channels, height, width)
        passed = [x[:, : self.tiles]] + ([x[:, -self.lookahead_planes :]] if self.lookahead_planes else [])
        return torch.cat([h, *passed], dim=1).flatten(1)


#: scale of the lookahead weights in the logits (``_CellLogits``)
LOOKAHEAD_GAIN = 10.0


class _CellLogits(nn.Module):
    """Flattened per-cell features → a 1×1 convolution to ``T`` logits per cell, flattened in
    ``(T, H, W)`` order (``FlatWideAction``'s action index). With ``mask_noop`` the logit of the
    tile already in a cell is pushed to −1e9: writing it would change nothing, cost a step, and
    (taken greedily) repeat forever. With ``lookahead_planes`` ``L = K·T`` (``GoalFeatures``' edit
    lookahead), ``Σ_k w[k, t] · lookahead[k, t]`` is added to the logit of writing ``t``: the
    learned weights start at zero (the same policy as without them) and can make, say, "this
    edit finishes a goal level" decisive in a few hundred optimizer steps: they enter the logits
    times ``LOOKAHEAD_GAIN``, since Adam moves a parameter by about its learning rate a step and a
    weight of a few nats would otherwise take thousands."""

    def __init__(self, channels: int, height: int, width: int, tiles: int, mask_noop: bool = True,
                 lookahead_planes: int = 0) -> None:
        super().__init__()
        self.channels, self.tiles, self.mask_noop = channels, tiles, mask_noop
        self.shape = (channels + tiles + lookahead_planes, height, width)
        self.conv = nn.Conv2d(channels, tiles, 1)
        nn.init.orthogonal_(self.conv.weight, gain=0.01)  # SB3's policy-head gain: a near-uniform start
        nn.init.zeros_(self.conv.bias)  # type: ignore[arg-type]
        self.lookahead = nn.Parameter(torch.zeros(lookahead_planes // tiles, tiles, 1, 1)) if lookahead_planes else None

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        cells = latent.view(-1, *self.shape)
        c, t = self.channels, self.tiles
        logits = self.conv(cells[:, :c])  # (B, T, H, W)
        if self.lookahead is not None:
            values = cells[:, c + t :].unflatten(1, self.lookahead.shape[:2])  # (B, K, T, H, W)
            logits = logits + LOOKAHEAD_GAIN * (values * self.lookahead).sum(1)
        if self.mask_noop:
            logits = logits - 1e9 * cells[:, c : c + t]
        return logits.flatten(1)


class _MapValue(nn.Module):
    """Flattened per-cell features → mean and max of the learned channels over the map → a
    linear value."""

    def __init__(self, channels: int, height: int, width: int, tiles: int, lookahead_planes: int = 0) -> None:
        super().__init__()
        self.channels, self.shape = channels, (channels + tiles + lookahead_planes, height, width)
        self.linear = nn.Linear(2 * channels, 1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        h = latent.view(-1, *self.shape)[:, : self.channels]
        return self.linear(torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1))


class FullyConvPolicy(ActorCriticPolicy):
    """SB3 actor-critic for ``FlatWideAction`` envs: ``FullyConvExtractor`` shared by a per-cell
    logit head (``Discrete(T·H·W)``, one categorical over every (tile, cell)) and a pooled value
    head. ``channels`` sets the network width; ``mask_noop`` (default) never writes the tile a cell
    already has; ``feature_planes`` input planes after the tiles are features, not tiles
    (``GoalFeatures``), the last ``lookahead_planes`` of them its edit lookahead (which also
    reaches the logits directly, ``_CellLogits``); ``attention_layers`` adds transformer layers
    over the cells (``FullyConvExtractor``). SB3's ``net_arch`` is not used."""

    def __init__(self, observation_space: gym.spaces.Space[Any], action_space: gym.spaces.Space[Any], lr_schedule: Any,
                 channels: int = 32, mask_noop: bool = True, feature_planes: int = 0, attention_layers: int = 0,
                 lookahead_planes: int = 0, **kwargs: Any) -> None:
        planes, height, width = observation_space.shape  # type: ignore[misc]
        tiles = planes - feature_planes
        if not isinstance(action_space, gym.spaces.Discrete) or int(action_space.n) != tiles * height * width:
            raise ValueError("FullyConvPolicy needs one Discrete(T·H·W) action per (tile, cell): wrap a wide env in FlatWideAction.")
        if lookahead_planes % tiles or lookahead_planes > feature_planes:
            raise ValueError(f"lookahead_planes must be a multiple of the {tiles} tiles among the feature planes, got {lookahead_planes}.")
        self._cells = (channels, height, width, tiles)
        self.mask_noop, self.lookahead_planes = mask_noop, lookahead_planes
        kwargs.update(net_arch=[], features_extractor_class=FullyConvExtractor,
                      features_extractor_kwargs={"channels": channels, "feature_planes": feature_planes,
                                                 "attention_layers": attention_layers, "lookahead_planes": lookahead_planes},
                      normalize_images=False, share_features_extractor=True)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)  # SB3's linear heads, replaced by the convolutional ones
        channels, height, width, tiles = self._cells
        self.action_net = _CellLogits(channels, height, width, tiles, self.mask_noop, self.lookahead_planes)
        self.value_net = _MapValue(channels, height, width, tiles, self.lookahead_planes)  # type: ignore[assignment]
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]


def grid_symmetries(height: int, width: int) -> list[tuple[int, bool]]:
    """The symmetries of a ``height × width`` map that keep its shape, as ``(quarter turns, mirror)``:
    all 8 rotations and reflections of a square map, 4 of a rectangle (identity, the half turn and
    the two flips); the identity first. The order of ``teacher.symmetries``."""
    return [(turns, mirror) for turns in range(4) for mirror in (False, True)
            if turns % 2 == 0 or height == width]


def _turn(x: torch.Tensor, turns: int, mirror: bool) -> torch.Tensor:
    x = torch.rot90(x, turns, dims=(-2, -1))
    return x.flip(-1) if mirror else x


def _unturn(x: torch.Tensor, turns: int, mirror: bool) -> torch.Tensor:
    return torch.rot90(x.flip(-1) if mirror else x, -turns, dims=(-2, -1))


def symmetric_logits(policy: FullyConvPolicy, observations: torch.Tensor) -> torch.Tensor:
    """Action logits ``(B, T·H·W)`` of ``policy`` averaged over the map's symmetries: the
    observations ``(B, planes, H, W)`` turned and mirrored, the policy's per-cell logits of each
    image turned back, then their mean. The result is exactly equivariant (a turned map gets the
    turned action distribution) and pools eight (square) or four (rectangle) views of each map, at
    that many forward passes. The observation's planes must turn with the map: the one-hot tiles and
    ``GoalFeatures``' distance planes from a player do (zelda, sokoban); binary's path starts are the
    first cell of each region in row order, so its turned distance planes are an approximation."""
    if not isinstance(policy, FullyConvPolicy):
        raise TypeError(f"symmetric logits need a FullyConvPolicy (per-cell logits), got {type(policy).__name__}.")
    _, height, width, tiles = policy._cells
    views = grid_symmetries(height, width)
    total = torch.zeros(len(observations), tiles, height, width, device=observations.device)
    for turns, mirror in views:
        logits = policy.get_distribution(_turn(observations, turns, mirror)).distribution.logits  # type: ignore[union-attr]
        total += _unturn(logits.view(-1, tiles, height, width), turns, mirror)
    return (total / len(views)).flatten(1)
