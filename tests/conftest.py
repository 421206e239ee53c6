import sys
from pathlib import Path

# Make tests/reference_scenarios.py importable as a plain module from every test file, and the
# repository's benchmarks/ package (not installed with sflam-opt) from tests/test_bench.py.
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
