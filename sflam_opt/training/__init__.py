"""Split-federated trainer of sflam-opt: data, partitions, split ViTs, quantizer, protocols.

Public API::

    from sflam_opt.training import TrainConfig, train
    result = train(TrainConfig(protocol="sflam", rounds=40))
    print(result.summary["final_test_accuracy"], result.summary["uplink_bytes"])

See :mod:`sflam_opt.training.trainer` for how the trainer links to the cost model and the bound of
the formulation, and :mod:`sflam_opt.training.calibrate` for estimating the bound's constants.
"""

from typing import Any

__all__ = [
    "QuantizedTensor",
    "TrainConfig",
    "TrainResult",
    "calibrate",
    "dequantize",
    "quantize",
    "train",
]


def __getattr__(name: str) -> Any:
    # torch, the solvers, scikit-learn and matplotlib load on first use, so that the CLI (which
    # imports sflam_opt.training.cli for --help) starts without them.
    if name in ("QuantizedTensor", "dequantize", "quantize"):
        from sflam_opt.training import quantizer

        return getattr(quantizer, name)
    if name == "TrainConfig":
        from sflam_opt.training.config import TrainConfig

        return TrainConfig
    if name in ("TrainResult", "train"):
        from sflam_opt.training import trainer

        return getattr(trainer, name)
    if name == "calibrate":
        from sflam_opt.training.calibrate import calibrate

        return calibrate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
