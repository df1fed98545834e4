#!/usr/bin/env python3
"""Model-card entry point: ``python3 train.py CONFIG [--out DIR] [--set k=v] [--resume]``.

Same as ``liif train``; under torchrun (see dist_train.sh) every process runs it.
"""
import sys

from liif.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
