"""ClientApp, mod style: a plain FedAvg client; ``sflam_mod`` quantizes its update.

The train function is what any Flower FedAvg client returns (the trained arrays and
``num-examples``); ``sflam_mod`` turns the reply into ``trained - received`` packed at the bits
the strategy chose for this node. The channel query still needs a handler (Flower dispatches
before mods run); here it reports the same faded gain as ``client_app.py``. Select it with
``clientapp = "sflam_flower.client_app_mod:app"`` in pyproject.toml.

For the online calibration the plain reply also carries what training measured (``mean-loss``,
``grad-sq-norm``, ``update-step``, see :data:`MEASURED`), and :func:`calibration_mod`, a train-only
mod inside ``sflam_mod``, turns them into the strategy's ``calib-*`` metrics, with the quantization
error of the very frame ``sflam_mod`` then sends. Both clients send the same bytes and metrics.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from sflam_flower import task
from sflam_flower.client_app import channel, local_training
from sflam_opt.integrations.flower import calibration_metrics, sflam_mod

#: Metrics of the plain train reply that :func:`calibration_mod` turns into ``calib-*`` metrics:
#: the mean loss over the local steps, the mean squared whole-model gradient norm over them, and
#: the displacement per unit gradient (``lr / (1 - momentum)`` x local steps).
MEASURED = ("mean-loss", "grad-sq-norm", "update-step")

app = ClientApp(mods=[sflam_mod])
app.query("channel")(channel)


def calibration_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Replace the plain train reply's :data:`MEASURED` metrics by ``calibration_metrics``.

    It runs inside ``sflam_mod`` (``app.train(mods=[...])`` after ``ClientApp(mods=[sflam_mod])``),
    so it sees the received arrays and the plain reply; a reply without the metrics, an error
    reply, or a message without an allocation passes through unchanged.
    """
    reply = call_next(msg, context)
    config = msg.content.config_records.get("config", {})
    if reply.has_error() or "bits" not in config:
        return reply
    metrics = reply.content["metrics"]
    if not all(k in metrics for k in MEASURED):
        return reply
    received = msg.content["arrays"]
    trained = reply.content["arrays"]
    # The update exactly as sflam_mod computes it (same arrays, same order), so the error is
    # that of the frame it sends (calibration_metrics and train_reply draw the same rounding).
    update = [trained[k].numpy() - a.numpy() for k, a in received.items()]
    loss, gsq, step = (float(metrics.pop(k)) for k in MEASURED)
    metrics.update(calibration_metrics(msg, update, loss=loss, grad_sq_norm=gsq, step=step))
    return reply


@app.train(mods=[calibration_mod])
def train(msg: Message, context: Context) -> Message:
    model, n, stats = local_training(msg, context)
    cfg = task.config(context.run_config)
    metrics = MetricRecord(
        {
            "num-examples": n,
            "train-loss": stats.loss,
            "mean-loss": stats.mean_loss,
            "grad-sq-norm": stats.grad_sq_norm,
            "update-step": task.update_step(cfg, stats.steps),
        }
    )
    return Message(
        RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg
    )
