"""`python -m lightning_accel ...` runs the `lightning-accel` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
