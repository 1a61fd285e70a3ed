"""Alias of :mod:`structvae.data.celeba` (the CelebA loader), kept so old imports work.

``import structvae.celeba`` returns that module itself, so its attributes (and monkeypatches of
them) are the loader's own.
"""

import sys

from .data import celeba as _celeba

sys.modules[__name__] = _celeba
