"""`make bench`: every benchmark, each against its anchor in the same run."""

import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if __name__ == "__main__":
    for module in (
        "bench.tools_bench",
        "bench.truncation_bench",
        "bench.executor_bench",
        "bench.cpu_bench",
        "bench.api_bench",
        "bench.mcp_bench",
        "bench.humaneval_bench",
        "bench.load_bench",
        "bench.hostile_bench",
        "bench.packages_bench",
        "bench.files_flows",
        "bench.code_mode_bench",
    ):
        print(f"\n## {module}")
        runpy.run_module(module, run_name="__main__")
