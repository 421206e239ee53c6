"""SFLAM inside a Flower app: per-node bits, bandwidth and power, and really quantized updates.

Install with ``pip install 'sflam-opt[flower]'``. Server side, :class:`SflamStrategy` (a Flower
``FedAvg``, which checks every reply: :mod:`.validation`); client side, :func:`channel_reply`,
:func:`read_allocation` and :func:`train_reply`, or the client mod :func:`sflam_mod` (with
:func:`channel_query`) for an unchanged ``ClientApp``; for tests,
:class:`~sflam_opt.integrations.flower.testing.InProcessGrid`. The README section
"Using SflamStrategy in your Flower app" shows a complete server and client.
"""

from __future__ import annotations

try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "sflam_opt.integrations.flower needs Flower: pip install 'sflam-opt[flower]'"
    ) from exc

from sflam_opt.integrations.fl_update import update_scenario
from sflam_opt.integrations.flower.client import (
    CALIBRATION_KEYS,
    QUERY_CHANNEL,
    calibration_metrics,
    channel_reply,
    pack_update,
    read_allocation,
    train_reply,
    unpack_update,
)
from sflam_opt.integrations.flower.mod import channel_query, sflam_mod
from sflam_opt.integrations.flower.strategy import SflamRound, SflamStrategy

__all__ = [
    "CALIBRATION_KEYS",
    "QUERY_CHANNEL",
    "SflamRound",
    "SflamStrategy",
    "calibration_metrics",
    "channel_query",
    "channel_reply",
    "pack_update",
    "read_allocation",
    "sflam_mod",
    "train_reply",
    "unpack_update",
    "update_scenario",
]
