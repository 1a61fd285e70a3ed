"""Alias of :mod:`structvae.data.semisup` (balanced labelled subsets, mixed batches).

``import structvae.semisup_data`` returns that module itself.
"""

import sys

from .data import semisup as _semisup

sys.modules[__name__] = _semisup
