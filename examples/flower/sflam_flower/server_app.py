"""ServerApp: SflamStrategy over the devices, evaluation on the held-out digits."""

from __future__ import annotations

from logging import INFO
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result

from sflam_flower import task
from sflam_opt.integrations.flower import SflamStrategy, update_scenario

app = ServerApp()
#: The last run's per-round table, for tests and notebooks that run the app in-process.
LAST_RUN: dict[str, Any] = {"history": []}


def calibration_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """SflamStrategy arguments from the run config's ``calibration`` key.

    "offline" (the default) passes nothing: the strategy uses the scenario's constants. Any other
    value is handed to the strategy as ``calibration=`` (e.g. "online", where the strategy
    supports it).
    """
    value = str(cfg["calibration"])
    return {} if value == "offline" else {"calibration": value}


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
    log(INFO, "round  accuracy  uplink bytes  bits per device")
    for rec in strategy.history:
        acc = result.evaluate_metrics_serverapp[rec.server_round]["accuracy"]
        sent = rec.allocation.bits.tolist() if rec.allocation is not None else []
        bits = dict(zip(rec.device_ids, sent, strict=True))
        rows.append(
            {
                "round": rec.server_round,
                "accuracy": acc,
                "uplink_bytes": rec.uplink_bytes,
                "bits": bits,
            }
        )
        per_device = " ".join(f"{k}:{b}" for k, b in sorted(bits.items()))
        log(INFO, "%5d  %8.3f  %12d  %s", rec.server_round, acc, rec.uplink_bytes, per_device)
    LAST_RUN["history"] = rows
    return result, strategy


@app.main()
def main(grid: Grid, context: Context) -> None:
    run(grid, context)
