"""Run the sflam-opt benchmarks: a thin script over ``sflam-opt bench`` (same code, same outputs).

Usage (from the repository root)::

    python benchmarks/run_bench.py all --out docs      # == sflam-opt bench all --out docs
    python benchmarks/run_bench.py quick               # == sflam-opt bench quick
    python benchmarks/run_bench.py solve --out docs    # one section

See ``sflam_opt/bench/`` for what each benchmark measures and ``docs/results.md`` for the results.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sflam_opt.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
