"""ClientApp, mod style: a plain FedAvg client; ``sflam_mod`` quantizes its update.

The train function is what any Flower FedAvg client returns (the trained arrays and
``num-examples``); ``sflam_mod`` turns the reply into ``trained - received`` packed at the bits
the strategy chose for this node. The channel query still needs a handler (Flower dispatches
before mods run); here it reports the same faded gain as ``client_app.py``. Select it with
``clientapp = "sflam_flower.client_app_mod:app"`` in pyproject.toml.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from sflam_flower import task
from sflam_flower.client_app import channel
from sflam_opt.integrations.flower import sflam_mod

app = ClientApp(mods=[sflam_mod])
app.query("channel")(channel)


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = task.config(context.run_config)
    device = int(context.node_config["partition-id"])
    rnd = int(msg.content["config"]["server-round"])
    model = task.make_model(int(cfg["seed"]))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = task.partition(device, int(cfg["num-devices"]), int(cfg["seed"]))
    loss = task.train(model, x, y, cfg, seed=1000 * rnd + device)
    metrics = MetricRecord({"num-examples": len(x), "train-loss": loss})
    return Message(
        RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg
    )
