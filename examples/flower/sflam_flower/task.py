"""Data, model, training and channel of the example: an MLP on scikit-learn's digits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from sflam_opt import Scenario

#: Run config used when the runner passes none (as ``flwr.simulation.run_simulation`` does);
#: the same values as ``[tool.flwr.app.config]`` in pyproject.toml.
DEFAULTS: dict[str, Any] = {
    "num-server-rounds": 20,
    "num-devices": 10,
    "fraction-train": 0.5,
    "local-epochs": 2,
    "batch-size": 32,
    "lr": 0.5,
    "bandwidth-hz": 1e6,
    "seed": 0,
    "calibration": "online",
    "fit-rounds": 5,
}


def config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """The run config over the defaults."""
    return {**DEFAULTS, **dict(run_config)}


def _split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)


def partition(device: int, num_devices: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Device ``device``'s share of the training split (IID, equal sizes up to one sample)."""
    x, _, y, _ = _split(seed)
    order = np.random.default_rng(seed).permutation(len(x))
    part = np.array_split(order, num_devices)[device]
    return torch.from_numpy(x[part]), torch.from_numpy(y[part]).long()


def test_set(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out 20 % of digits, for the server's evaluation."""
    _, x, _, y = _split(seed)
    return torch.from_numpy(x), torch.from_numpy(y).long()


def make_model(seed: int) -> nn.Module:
    """A 64-32-10 MLP (2,410 parameters)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class TrainStats(NamedTuple):
    """What one round of local training measured."""

    #: Mean training loss of the last epoch (the ``train-loss`` metric).
    loss: float
    #: Mean training loss over all local steps (the online calibration's ``F_k``).
    mean_loss: float
    #: Mean over the local steps of ``sum ||p.grad||^2``, the squared norm of the whole-model
    #: stochastic gradient (the online calibration's ``g_k``).
    grad_sq_norm: float
    #: Local SGD steps taken: local-epochs x ceil(samples / batch-size).
    steps: int


def train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: Mapping[str, Any], seed: int
) -> TrainStats:
    """Local SGD epochs (no momentum) on ``x``, ``y``; returns what they measured."""
    opt = torch.optim.SGD(model.parameters(), lr=float(cfg["lr"]))
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    losses: list[float] = []
    last: list[float] = []
    grad_sq: list[float] = []
    for _ in range(int(cfg["local-epochs"])):
        last = []
        for idx in torch.randperm(len(x), generator=gen).split(int(cfg["batch-size"])):
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            grad_sq.append(sum(float(p.grad.square().sum()) for p in model.parameters()))
            opt.step()
            last.append(loss.item())
        losses += last
    return TrainStats(
        float(np.mean(last)), float(np.mean(losses)), float(np.mean(grad_sq)), len(losses)
    )


def update_step(cfg: Mapping[str, Any], steps: int) -> float:
    """Displacement of the model per unit gradient over a round: ``lr / (1 - momentum)`` times
    the local steps (the ``step`` of ``calibration_metrics``; this SGD has no momentum)."""
    return float(cfg["lr"]) * steps


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(dim=1) == y).float().mean())


def nominal_gains_db(num_devices: int, seed: int) -> np.ndarray:
    """Path-loss gains of devices placed as in the default scenario (50-500 m from the base station)."""
    return Scenario.default(devices=num_devices, seed=seed).devices.gain_db


def faded_gain_db(device: int, server_round: int, num_devices: int, seed: int) -> float:
    """This round's gain: block Rayleigh fading (exponential power) around the path loss."""
    fade = np.random.default_rng([seed, device, server_round]).exponential()
    return float(nominal_gains_db(num_devices, seed)[device] + 10.0 * np.log10(fade))
