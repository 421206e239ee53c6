"""Cold solve time: the first ``solve`` in a fresh Python process, imports included.

A one-shot ``sflam-opt solve`` pays for importing the package (numpy, scipy, CVXPY) and, for the
CVXPY-based solvers, for canonicalizing their problems on the first call; a long-running process
pays that once. :func:`cold_solve` starts ``python -m benchmarks.cold`` with one JSON request and
reads back one JSON line::

    {"import_s": ..., "scenario_s": ..., "call_s": ..., "solve_time_s": ..., "status": ..., ...}

``import_s`` is ``import sflam_opt`` and its solvers, ``call_s`` the wall time of the first
``sflam_opt.solve(...)`` call (``solve_time_s`` is what that call's ``SolveResult`` reports), and
``cold_s = import_s + call_s``. Interpreter start-up and building the scenario are not included.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # before any sflam-opt import: the import is part of the cold time

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from typing import Any  # noqa: E402

__all__ = ["cold_solve"]


def cold_solve(
    solver: str, devices: int, seed: int, options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Time the first solve of ``Scenario.default(devices, seed)`` in a fresh process.

    Parameters
    ----------
    solver : str
        Registered solver name.
    devices : int
        Number of devices N of the default scenario.
    seed : int
        Seed of the default scenario.
    options : mapping, optional
        Solver options passed to ``solve``.

    Returns
    -------
    dict
        ``import_s``, ``scenario_s``, ``call_s``, ``cold_s`` (seconds), ``solve_time_s``,
        ``status``, ``objective``; or ``error`` (one line) when the child failed.
    """
    request = {"solver": solver, "devices": devices, "seed": seed, "options": dict(options or {})}
    from benchmarks.common import checkout_env

    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.cold", json.dumps(request)],
        capture_output=True,
        text=True,
        env=checkout_env(),
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"cold solve exited {proc.returncode}: {tail}"}
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def _main(request: Mapping[str, Any]) -> dict[str, Any]:
    from sflam_opt.scenario import Scenario
    from sflam_opt.solvers import solve

    t1 = time.perf_counter()
    scn = Scenario.default(devices=int(request["devices"]), seed=int(request["seed"]))
    t2 = time.perf_counter()
    res = solve(scn, solver=request["solver"], **request.get("options", {}))
    t3 = time.perf_counter()
    return {
        "import_s": t1 - _T0,
        "scenario_s": t2 - t1,
        "call_s": t3 - t2,
        "cold_s": (t1 - _T0) + (t3 - t2),
        "solve_time_s": res.solve_time_s,
        "status": res.status,
        "objective": res.objective,
    }


if __name__ == "__main__":
    print(json.dumps(_main(json.loads(sys.argv[1]))))
