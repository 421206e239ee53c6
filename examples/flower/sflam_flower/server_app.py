"""ServerApp: SflamStrategy over the devices, evaluation on the held-out digits."""

from __future__ import annotations

from logging import INFO, WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result

from sflam_flower import task
from sflam_opt.estimator import MIN_FIT_ROUNDS, WARMUP_BITS
from sflam_opt.integrations.flower import SflamStrategy, update_scenario

app = ServerApp()
#: The last run's per-round table, for tests and notebooks that run the app in-process.
LAST_RUN: dict[str, Any] = {"history": []}


def check_calibration(cfg: dict[str, Any]) -> None:
    """Refuse a bad ``calibration`` or ``fit-rounds`` run-config value with a one-line ValueError."""
    value = cfg["calibration"]
    if value not in ("online", "scenario", "offline"):
        raise ValueError(
            f'run config calibration={value!r}: choose "online" or "scenario" (TOML strings, '
            "e.g. 'calibration=\"scenario\"')"
        )
    fit = cfg["fit-rounds"]
    if value == "online" and not (isinstance(fit, int) and fit >= MIN_FIT_ROUNDS):
        raise ValueError(
            f"run config fit-rounds={fit!r}: give a whole number >= {MIN_FIT_ROUNDS}, the fewest "
            "rounds the online calibration fits on"
        )


def calibration_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """SflamStrategy arguments from the run config's ``calibration`` and ``fit-rounds`` keys.

    "online" (the default): the first ``fit-rounds`` rounds (more while the measured gradient norm
    has not fallen yet) send 4-bit updates and measure the bound's constants, later rounds are
    solved with them. "scenario": the scenario's constants
    from the first round. "offline", this key's old name for "scenario", is still accepted, with
    a warning. Anything else is refused (:func:`check_calibration`).
    """
    check_calibration(cfg)
    value, rounds, fit = cfg["calibration"], int(cfg["num-server-rounds"]), cfg["fit-rounds"]
    if value == "offline":
        log(WARNING, 'calibration = "offline" is now called "scenario"; using "scenario"')
    if value != "online":
        return {"calibration": "scenario"}
    if rounds <= fit:
        log(WARNING, "%s", all_fit_note(rounds, fit))
    return {"calibration": "online", "fit_rounds": fit}


def all_fit_note(rounds: int, fit_rounds: int) -> str:
    """Why a short online run never solves with fitted constants."""
    return (
        f"note: all {rounds} rounds are fit rounds of the online calibration ({WARMUP_BITS}-bit "
        "updates, constants measured, not used yet); rounds solved with the fitted constants start "
        f"at round {fit_rounds + 1} at the earliest: give num-server-rounds >= {fit_rounds + 1} to "
        "see them"
    )


def table(rows: list[dict[str, Any]], fit_rounds: int) -> list[str]:
    """The per-round table printed by the app, deploy.sh, sim.sh and in_process.py.

    ``calib`` is the round's calibration phase ("fit": 4 bits while the constants are measured,
    "online": solved with the fitted constants, "scenario": the scenario's; a ``*`` marks a round
    whose solve failed, which then used the equal allocation); ``eps`` and ``q`` are the
    constants in force (none in a fit round).
    """
    lines = ["round  accuracy  uplink bytes  calib        eps          q  bits per device"]
    for row in rows:
        c = row["convergence"] if row["calibration"] != "fit" else {}
        eps, q = (f"{c[k]:10.4g}" if k in c else f"{'-':>10}" for k in ("epsilon", "q"))
        phase = row["calibration"] + ("*" if row["fallback"] else "")
        per_device = " ".join(f"{k}:{b}" for k, b in sorted(row["bits"].items()))
        lines.append(
            f"{row['round']:5d}  {row['accuracy']:8.3f}  {row['uplink_bytes']:12d}  "
            f"{phase:<8} {eps} {q}  {per_device}"
        )
    if rows and all(row["calibration"] == "fit" for row in rows):
        lines.append(all_fit_note(len(rows), fit_rounds))
    if any(row["fallback"] for row in rows):
        lines.append(
            "note: * no allocation meets these constants (the warnings above say why); the round "
            "used the equal allocation at the largest bits"
        )
    return lines


def run(grid: Grid, context: Context) -> tuple[Result, SflamStrategy]:
    cfg = task.config(context.run_config)
    n, seed = int(cfg["num-devices"]), int(cfg["seed"])
    model = task.make_model(seed)
    samples = [len(task.partition(k, n, seed)[1]) for k in range(n)]
    d = task.num_params(model)
    scenario = update_scenario(
        d,
        gain_db=task.nominal_gains_db(n, seed),
        samples=samples,
        # Forward + backward is about 6 operations per parameter and sample; one cycle each.
        device_cycles=6.0 * d * max(samples) * int(cfg["local-epochs"]),
        system={"bandwidth_hz": float(cfg["bandwidth-hz"])},
    )
    strategy = SflamStrategy(
        scenario,
        fraction_train=float(cfg["fraction-train"]),
        fraction_evaluate=0.0,  # the server evaluates on the held-out split instead
        min_train_nodes=2,
        min_available_nodes=2,
        **calibration_kwargs(cfg),
    )
    x_test, y_test = task.test_set(seed)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        return MetricRecord({"accuracy": task.accuracy(model, x_test, y_test)})

    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=int(cfg["num-server-rounds"]),
        train_config=ConfigRecord({"lr": float(cfg["lr"])}),
        evaluate_fn=evaluate,
    )
    rows = []
    for rec in strategy.history:
        sent = rec.allocation.bits.tolist() if rec.allocation is not None else []
        rows.append(
            {
                "round": rec.server_round,
                "accuracy": result.evaluate_metrics_serverapp[rec.server_round]["accuracy"],
                "uplink_bytes": rec.uplink_bytes,
                "bits": dict(zip(rec.device_ids, sent, strict=True)),
                "calibration": rec.calibration,
                "convergence": dict(rec.convergence),
                "fallback": rec.fallback,
            }
        )
    for line in table(rows, int(cfg["fit-rounds"])):
        log(INFO, "%s", line)
    LAST_RUN["history"] = rows
    return result, strategy


@app.main()
def main(grid: Grid, context: Context) -> None:
    run(grid, context)
