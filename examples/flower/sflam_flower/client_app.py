"""ClientApp: report the channel, train locally, send the update at the allocated bits."""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from torch import nn

from sflam_flower import task
from sflam_opt.integrations.flower import channel_reply, read_allocation, train_reply

app = ClientApp()


@app.query("channel")
def channel(msg: Message, context: Context) -> Message:
    cfg = task.config(context.run_config)
    device = int(context.node_config["partition-id"])  # the device id in the server's scenario
    rnd = int(msg.content["config"]["server-round"])
    return channel_reply(
        msg, device, task.faded_gain_db(device, rnd, int(cfg["num-devices"]), int(cfg["seed"]))
    )


def local_training(msg: Message, context: Context) -> tuple[nn.Module, int, float]:
    """Load the received arrays and train on this node's share: (model, examples, last loss)."""
    cfg = task.config(context.run_config)
    device = int(context.node_config["partition-id"])
    rnd = int(msg.content["config"]["server-round"])
    model = task.make_model(int(cfg["seed"]))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = task.partition(device, int(cfg["num-devices"]), int(cfg["seed"]))
    loss = task.train(model, x, y, cfg, seed=1000 * rnd + device)
    return model, len(x), loss


@app.train()
def train(msg: Message, context: Context) -> Message:
    received = msg.content["arrays"].to_numpy_ndarrays()
    model, n, loss = local_training(msg, context)
    update = [
        v.detach().numpy() - r for v, r in zip(model.state_dict().values(), received, strict=True)
    ]
    bits = read_allocation(msg)["bits"]  # what the update will be quantized to
    return train_reply(msg, update, num_examples=n, metrics={"train-loss": loss, "bits": bits})
