"""Shared pieces for mixers bound to a stage's feature-map size (spatial MLP, global filter, random matrix)."""

from __future__ import annotations

import torch
from torch import nn


class ResolutionBound(nn.Module):
    """A mixer whose parameters depend on (H, W); it refuses inputs of another size with a clear error."""

    mixer_name = "mixer"

    def __init__(self, resolution: tuple[int, int] | None) -> None:
        super().__init__()
        if resolution is None:
            raise ValueError(
                f"mixer '{self.mixer_name}' is bound to its stage's resolution: build it with "
                f"resolution=(H, W) (create_model derives it from img_size)"
            )
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.mixer_name = type(self).mixer_name  # an instance attribute, so TorchScript can read it

    def check(self, x: torch.Tensor) -> None:
        """Raise ValueError when the input's H, W differ from the resolution this mixer was built for."""
        # H and W compared one by one: TorchScript cannot compare a tuple built from a shape
        if x.shape[-2] != self.resolution[0] or x.shape[-1] != self.resolution[1]:
            raise ValueError(
                f"mixer '{self.mixer_name}' was built for a {self.resolution[0]}x{self.resolution[1]} feature "
                f"map but received {x.shape[-2]}x{x.shape[-1]}; build the model with the input's img_size"
            )

    @property
    def num_tokens(self) -> int:
        return self.resolution[0] * self.resolution[1]
