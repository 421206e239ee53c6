"""ClientApp: report the channel, train locally, send the update at the allocated bits.

Every train reply also carries the online calibration's measurements (``calibration_metrics``:
``calib-loss``, ``calib-grad-sq``, ``calib-quant-err``, ``calib-quant-bits``), which the strategy
uses in its fit rounds when the run config says ``calibration = "online"`` and ignores otherwise.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from torch import nn

from sflam_flower import task
from sflam_opt.integrations.flower import (
    calibration_metrics,
    channel_reply,
    read_allocation,
    train_reply,
)

app = ClientApp()


@app.query("channel")
def channel(msg: Message, context: Context) -> Message:
    cfg = task.config(context.run_config)
    device = int(context.node_config["partition-id"])  # the device id in the server's scenario
    rnd = int(msg.content["config"]["server-round"])
    return channel_reply(
        msg, device, task.faded_gain_db(device, rnd, int(cfg["num-devices"]), int(cfg["seed"]))
    )


def local_training(msg: Message, context: Context) -> tuple[nn.Module, int, task.TrainStats]:
    """Load the received arrays and train on this node's share: (model, examples, stats)."""
    cfg = task.config(context.run_config)
    device = int(context.node_config["partition-id"])
    rnd = int(msg.content["config"]["server-round"])
    model = task.make_model(int(cfg["seed"]))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = task.partition(device, int(cfg["num-devices"]), int(cfg["seed"]))
    stats = task.train(model, x, y, cfg, seed=1000 * rnd + device)
    return model, len(x), stats


@app.train()
def train(msg: Message, context: Context) -> Message:
    received = msg.content["arrays"].to_numpy_ndarrays()
    model, n, stats = local_training(msg, context)
    update = [
        v.detach().numpy() - r for v, r in zip(model.state_dict().values(), received, strict=True)
    ]
    bits = read_allocation(msg)["bits"]  # what the update will be quantized to
    extra = calibration_metrics(
        msg,
        update,
        loss=stats.mean_loss,
        grad_sq_norm=stats.grad_sq_norm,
        step=task.update_step(task.config(context.run_config), stats.steps),
    )
    metrics = {"train-loss": stats.loss, "bits": bits, **extra}
    return train_reply(msg, update, num_examples=n, metrics=metrics)
