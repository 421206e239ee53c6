"""sflam-opt's benchmarks: the code behind every figure in ``docs/results.md`` and
``docs/theory-results.md``.

Not part of the installed package; run from a checkout of the repository, only as
``python -m benchmarks COMMAND``::

    python -m benchmarks quick                 # reduced sizes, for CI
    python -m benchmarks all --out docs        # the published results
    python -m benchmarks solve --out docs      # one section
    python -m benchmarks report --out docs     # re-render from the data files
    python -m benchmarks check                 # which published results are stale
    python -m benchmarks theory report         # docs/theory-results.md (benchmarks.theory)
    python -m benchmarks distributed           # in-process against gloo training (printed)

One harness serves every section: :class:`benchmarks.common.BenchContext` writes the data files
and records the environment (``ctx.meta``: command, profile, git commit, machine, CPU count,
library versions, load average at start and end), :mod:`benchmarks.markdown` formats every
number and table, :mod:`benchmarks.report` assembles ``results.md``.

Adding a section
----------------
1. Write a module ``benchmarks/<name>.py`` with ``run(ctx)``, ``draw(figures)``,
   ``report(figures, doc)`` and ``headlines(figures, doc)`` (:class:`benchmarks.sections.
   SectionModule`). ``run`` writes ``figures/<name>.json`` with ``"meta": ctx.meta(...)`` plus
   its CSV/PNG files through ``ctx``; ``report`` links every file it wrote
   (:func:`benchmarks.markdown.made_by`), or ``check`` lists them as orphans.
2. Add one ``register(...)`` call at the end of :mod:`benchmarks.sections`, with
   ``measures=(...)``: the paths (from the repository root) of the code the section measures,
   built from the groups ``MODEL``, ``SOLVERS``, ``TRAINING`` and its own module. ``check``
   lists the section as stale when any of them changes after the commit its data records.
3. Headlines explain themselves: each names its scenario, warm or cold, fading or not and, for
   times, the machine load (:func:`benchmarks.markdown.load_note`).
"""
