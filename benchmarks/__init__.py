"""sflam-opt's benchmarks: the code behind every figure in ``docs/results.md``.

Not part of the installed package; run from a checkout of the repository::

    python -m benchmarks quick                 # reduced sizes, for CI
    python -m benchmarks all --out docs        # the published results
    python -m benchmarks solve --out docs      # one section
    python -m benchmarks report --out docs     # re-render from the data files

The sections are registered in :mod:`benchmarks.sections`; :mod:`benchmarks.report` assembles
``results.md`` from the files they write.
"""
