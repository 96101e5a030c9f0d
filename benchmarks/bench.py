"""Benchmark tinymobilebert against its NumPy twins and transformers' PyTorch MobileBERT.

    python benchmarks/bench.py [--sizes tiny,small,paper] [--json out.json] [--repeats N] [--quick]

A thin wrapper: the logic lives in ``tinymobilebert.benchmark`` (also ``python -m tinymobilebert
bench``). What each column means: benchmarks/README.md.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tinymobilebert.benchmark import main  # noqa: E402

if __name__ == "__main__":
    main()
