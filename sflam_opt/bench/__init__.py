"""Benchmarks behind ``sflam-opt bench`` and ``docs/results.md`` (issue 7).

- :mod:`sflam_opt.bench.solve`: solver speed ladder, optimality gap to ``exact``, savings against
  the baselines, latency-energy Pareto front, BCD behaviour.
- :mod:`sflam_opt.bench.train`: protocols x non-IID alpha x seeds on digits, solver bits against
  uniform bits, the optional CIFAR-10 ViT-B/32 run.
- :mod:`sflam_opt.bench.memory`: device peak memory, SFLAM device versus FL device.
- :mod:`sflam_opt.bench.report` renders ``results.md`` from the CSV/JSON files the benchmarks
  wrote; :mod:`sflam_opt.bench.plots` draws the PNG figures from the same files.
"""

from sflam_opt.bench.common import PROFILES, BenchContext, Profile

__all__ = ["PROFILES", "BenchContext", "Profile"]
