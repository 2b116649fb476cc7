"""`make bench`: every benchmark, each against its anchor in the same run."""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if __name__ == "__main__":
    runpy.run_module("bench.executor_bench", run_name="__main__")
