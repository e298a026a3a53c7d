"""Entry point for ``python -m examples.predictor``."""

import sys

from examples.predictor.app import main

if __name__ == "__main__":
    sys.exit(main())
