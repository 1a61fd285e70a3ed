"""The convolutional encoder / decoder pair for 64×64 colour images, and the style-code spec."""

from __future__ import annotations

import re

from torch import nn

from ..data.celeba import CELEBA_IMAGE_SHAPE

__all__ = ["conv_encoder", "conv_decoder", "parse_style_latent"]

_STYLE = re.compile(r"^\s*(\d+)\s*$")


def parse_style_latent(spec: int | str) -> int:
    """``32`` or ``"32"`` -> the size of the Gaussian style code (``0``: none)."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        dim = spec
    else:
        m = _STYLE.match(str(spec))
        if m is None:
            raise ValueError(
                f"latent spec {spec!r}: the celeba model's --latent is the size of its Gaussian "
                "style code (e.g. --latent 32); its binary latents are the --attributes"
            )
        dim = int(m.group(1))
    if dim < 0:
        raise ValueError(f"the style-code size must be >= 0, got {dim}")
    return dim


def conv_encoder(channels: int, hidden: int) -> nn.Sequential:
    """``[B, 3, 64, 64] -> [B, hidden]``: four stride-2 4×4 convolutions (c, 2c, 4c, 8c channels,
    64 → 4 pixels), then a linear layer; ReLU."""
    c = [CELEBA_IMAGE_SHAPE[0], channels, 2 * channels, 4 * channels, 8 * channels]
    layers: list[nn.Module] = []
    for a, b in zip(c[:-1], c[1:], strict=True):
        layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c[-1] * 16, hidden), nn.ReLU())


def conv_decoder(in_dim: int, channels: int, hidden: int) -> nn.Sequential:
    """``[N, in_dim] -> [N, 3, 64, 64]`` logits: linear layers to 8c×4×4, then four stride-2 4×4
    transposed convolutions (4c, 2c, c, 3 channels); ReLU between."""
    c = [8 * channels, 4 * channels, 2 * channels, channels, CELEBA_IMAGE_SHAPE[0]]
    layers: list[nn.Module] = [
        nn.Linear(in_dim, hidden),
        nn.ReLU(),
        nn.Linear(hidden, c[0] * 16),
        nn.ReLU(),
        nn.Unflatten(1, (c[0], 4, 4)),
    ]
    for i, (a, b) in enumerate(zip(c[:-1], c[1:], strict=True)):
        layers.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
        if i < len(c) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)
