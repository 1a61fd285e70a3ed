"""Network builders shared by models and estimators: multi-layer perceptrons (the paper's
784-300-… encoders and decoders, the estimators' baselines and bridges)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

__all__ = ["mlp"]


def mlp(
    sizes: Sequence[int],
    activation: Callable[[], nn.Module] = nn.ReLU,
    final_activation: Callable[[], nn.Module] | None = None,
) -> nn.Sequential:
    """``Linear(sizes[0], sizes[1]) → activation → … → Linear(sizes[-2], sizes[-1])``.

    Args:
        sizes: layer widths, input first, output last (at least two entries).
        activation: a factory of the non-linearity put between linear layers (a class such as
            ``nn.ReLU``, or ``lambda: nn.LeakyReLU(0.2)``).
        final_activation: a factory for a non-linearity after the last layer (default: none,
            the output is linear, e.g. logits).
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least an input and an output size, got {sizes}")
    if any(s < 1 for s in sizes):
        raise ValueError(f"mlp layer sizes must be positive, got {sizes}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    if final_activation is not None:
        layers.append(final_activation())
    return nn.Sequential(*layers)
