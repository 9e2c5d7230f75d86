"""Policy networks over one-hot level observations ``(T, H, W)`` for Stable-Baselines3.

- ``LevelCNN``: a features extractor (strided convolutions, then a linear layer); SB3's MLP heads
  sit on top. Used by narrow and turtle, and by wide with SB3's factorised ``MultiDiscrete``.
- ``FullyConvPolicy``: PCGRL's wide agent. Convolutions at full resolution (with a pooled global
  context added back to every cell, so each cell sees the whole map) give per-cell tile logits,
  the action logits of ``FlatWideAction``'s ``Discrete(T·H·W)``; the value is a linear function of
  the pooled features. Writing the tile a cell already has (a no-op) is masked out.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

__all__ = ["FullyConvExtractor", "FullyConvPolicy", "LevelCNN"]


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
    """``(B, T + F, H, W)`` → per-cell features ``(B, (C + T)·H·W)``, flattened for SB3: ``C``
    learned channels, then the observation's ``T`` tile channels (the tile under each cell, for
    the no-op mask). ``F`` = ``feature_planes`` extra input planes after the tiles (``GoalFeatures``).

    Two 3×3 convolutions (``channels`` wide, padding 1, so the map keeps its size), then the
    channel means over the map through a linear layer are added to every cell before a third
    convolution: local patterns plus the global state (how many regions, how long the path)."""

    def __init__(self, observation_space: gym.spaces.Box, channels: int = 32, feature_planes: int = 0) -> None:
        planes, height, width = observation_space.shape
        tiles = planes - feature_planes
        super().__init__(observation_space, (channels + tiles) * height * width)
        self.tiles = tiles
        self.local = nn.Sequential(
            nn.Conv2d(planes, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
        )
        self.context = nn.Sequential(nn.Linear(channels, channels), nn.ReLU())
        self.out = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = observations.float()
        h = self.local(x)
        g = self.context(h.mean(dim=(2, 3)))
        h = torch.relu(self.out(h) + g[:, :, None, None])
        return torch.cat([h, x[:, : self.tiles]], dim=1).flatten(1)


class _CellLogits(nn.Module):
    """Flattened per-cell features → a 1×1 convolution to ``T`` logits per cell, flattened in
    ``(T, H, W)`` order (``FlatWideAction``'s action index). With ``mask_noop`` the logit of the
    tile already in a cell is pushed to −1e9: writing it would change nothing, cost a step, and
    (taken greedily) repeat forever."""

    def __init__(self, channels: int, height: int, width: int, tiles: int, mask_noop: bool = True) -> None:
        super().__init__()
        self.channels, self.shape, self.mask_noop = channels, (channels + tiles, height, width), mask_noop
        self.conv = nn.Conv2d(channels, tiles, 1)
        nn.init.orthogonal_(self.conv.weight, gain=0.01)  # SB3's policy-head gain: a near-uniform start
        nn.init.zeros_(self.conv.bias)  # type: ignore[arg-type]

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        cells = latent.view(-1, *self.shape)
        logits = self.conv(cells[:, : self.channels])
        if self.mask_noop:
            logits = logits - 1e9 * cells[:, self.channels :]
        return logits.flatten(1)


class _MapValue(nn.Module):
    """Flattened per-cell features → mean and max of the learned channels over the map → a
    linear value."""

    def __init__(self, channels: int, height: int, width: int, tiles: int) -> None:
        super().__init__()
        self.channels, self.shape = channels, (channels + tiles, height, width)
        self.linear = nn.Linear(2 * channels, 1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        h = latent.view(-1, *self.shape)[:, : self.channels]
        return self.linear(torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1))


class FullyConvPolicy(ActorCriticPolicy):
    """SB3 actor-critic for ``FlatWideAction`` envs: ``FullyConvExtractor`` shared by a per-cell
    logit head (``Discrete(T·H·W)``, one categorical over every (tile, cell)) and a pooled value
    head. ``channels`` sets the network width; ``mask_noop`` (default) never writes the tile a cell
    already has; ``feature_planes`` input planes after the tiles are features, not tiles
    (``GoalFeatures``). SB3's ``net_arch`` is not used."""

    def __init__(self, observation_space: gym.spaces.Space[Any], action_space: gym.spaces.Space[Any], lr_schedule: Any,
                 channels: int = 32, mask_noop: bool = True, feature_planes: int = 0, **kwargs: Any) -> None:
        planes, height, width = observation_space.shape  # type: ignore[misc]
        tiles = planes - feature_planes
        if not isinstance(action_space, gym.spaces.Discrete) or int(action_space.n) != tiles * height * width:
            raise ValueError("FullyConvPolicy needs one Discrete(T·H·W) action per (tile, cell): wrap a wide env in FlatWideAction.")
        self._cells = (channels, height, width, tiles)
        self.mask_noop = mask_noop
        kwargs.update(net_arch=[], features_extractor_class=FullyConvExtractor,
                      features_extractor_kwargs={"channels": channels, "feature_planes": feature_planes}, normalize_images=False, share_features_extractor=True)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)  # SB3's linear heads, replaced by the convolutional ones
        channels, height, width, tiles = self._cells
        self.action_net = _CellLogits(channels, height, width, tiles, self.mask_noop)
        self.value_net = _MapValue(channels, height, width, tiles)  # type: ignore[assignment]
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]
