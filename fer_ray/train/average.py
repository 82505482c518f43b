"""An exponential moving average of a model's weights (ModelSpec.ema), the weights a run exports.

Why: while the learning rate is still high, the last weights carry the noise of the last few hundred steps
and their average scores better, at no training cost (a forward-free update per step): on the accuracy
recipe, validation accuracy 0.600 against 0.483 after 7 of 20 epochs. Once a cosine schedule has brought the
rate to zero the last weights are such an average already, and it adds nothing (0.628 against 0.631 at the
end; benchmarks/README.md, "Weight average"), so the shipped configs leave it off. BatchNorm's running
statistics are averaged with the weights, so the averaged model is used as it is (no re-estimation pass).

The decay ramps up as `min(decay, (1 + n) / (10 + n))` after n updates (timm's ModelEma warm-up): early
averages do not carry the random initialisation, and on a short run the average spans roughly the last
tenth of its steps rather than a fixed number that could reach back into the first epochs.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """A copy of `model` whose floating-point parameters and buffers follow the model's as an EMA."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        self.decay, self.updates = float(decay), 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update uses."""
        n = self.updates + 1
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        self.updates += 1
        for mine, theirs in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if mine.dtype.is_floating_point:
                mine.lerp_(theirs.detach(), 1.0 - decay)
            else:  # e.g. BatchNorm's num_batches_tracked
                mine.copy_(theirs)

    def state_dict(self) -> dict:
        return {"weights": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
