"""Training protocols: SFLAM, SFL-V1 (SplitFed), FedAvg and sequential split learning.

Each protocol is one module over :class:`~.base.Protocol`; :data:`PROTOCOLS` maps the
``--protocol`` names to the classes.
"""

from __future__ import annotations

from sflam_opt.training.protocols.base import (
    ClientData,
    FedAvgAccumulator,
    Protocol,
    RoundPlan,
    RoundStats,
    batch_plan,
    fedavg,
    round_generator,
    split_step,
)
from sflam_opt.training.protocols.fl import FLProtocol
from sflam_opt.training.protocols.sfl import SFLProtocol
from sflam_opt.training.protocols.sflam import SFLAMProtocol
from sflam_opt.training.protocols.sl import SLProtocol

__all__ = [
    "PROTOCOLS",
    "ClientData",
    "FLProtocol",
    "FedAvgAccumulator",
    "Protocol",
    "RoundPlan",
    "RoundStats",
    "SFLAMProtocol",
    "SFLProtocol",
    "SLProtocol",
    "batch_plan",
    "fedavg",
    "round_generator",
    "split_step",
]

#: ``--protocol`` name -> class.
PROTOCOLS: dict[str, type[Protocol]] = {
    cls.name: cls for cls in (SFLAMProtocol, SFLProtocol, FLProtocol, SLProtocol)
}
