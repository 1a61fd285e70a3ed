"""``python -m structvae`` runs the ``structvae`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
