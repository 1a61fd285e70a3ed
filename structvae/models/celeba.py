"""The CelebA attribute VAE: an alias of :class:`~structvae.models.attribute.AttributeVAE`.

``--model celeba`` is ``--model attribute`` (one model for 28×28 digits and 64×64 faces); this
module keeps the names it used to define (``AttributeVAE``, the conv networks, the style spec).
"""

from __future__ import annotations

from .attribute import CODES, AttributeVAE
from .conv import conv_decoder, conv_encoder, parse_style_latent

__all__ = ["AttributeVAE", "conv_encoder", "conv_decoder", "parse_style_latent", "CODES"]
