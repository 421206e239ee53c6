"""Training protocols: SFLAM, SFL-V1 (SplitFed), FedAvg and sequential split learning.

Each protocol is one module over :class:`~.protocol.Protocol`, a device half and a server half
from :mod:`.roles`; :data:`PROTOCOLS` maps the ``--protocol`` names to the classes.
"""

from __future__ import annotations

from sflam_opt.training.protocols.base import (
    ClientData,
    FedAvgAccumulator,
    RoundPlan,
    RoundStats,
    batch_plan,
    fedavg,
    round_generator,
)
from sflam_opt.training.protocols.fl import FLProtocol
from sflam_opt.training.protocols.protocol import Protocol
from sflam_opt.training.protocols.roles import DeviceRole, LocalTraining, ServerRole
from sflam_opt.training.protocols.sfl import SFLProtocol
from sflam_opt.training.protocols.sflam import SFLAMProtocol
from sflam_opt.training.protocols.sl import SLProtocol

__all__ = [
    "PROTOCOLS",
    "ClientData",
    "DeviceRole",
    "FLProtocol",
    "FedAvgAccumulator",
    "LocalTraining",
    "Protocol",
    "RoundPlan",
    "RoundStats",
    "SFLAMProtocol",
    "SFLProtocol",
    "SLProtocol",
    "ServerRole",
    "batch_plan",
    "fedavg",
    "round_generator",
]

#: ``--protocol`` name -> class.
PROTOCOLS: dict[str, type[Protocol]] = {
    cls.name: cls for cls in (SFLAMProtocol, SFLProtocol, FLProtocol, SLProtocol)
}
