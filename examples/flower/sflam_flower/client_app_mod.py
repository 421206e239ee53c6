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

from sflam_flower.client_app import channel, local_training
from sflam_opt.integrations.flower import sflam_mod

app = ClientApp(mods=[sflam_mod])
app.query("channel")(channel)


@app.train()
def train(msg: Message, context: Context) -> Message:
    model, n, loss = local_training(msg, context)
    metrics = MetricRecord({"num-examples": n, "train-loss": loss})
    return Message(
        RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg
    )
