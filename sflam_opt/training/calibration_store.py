"""Versioned calibrations of the convergence bound, looked up by training configuration.

A calibration (:func:`sflam_opt.training.calibrate.calibrate`) is valid only for the configuration
it measured: the same model, data set, input size, devices, participants per round, Dirichlet
alpha, learning rate, momentum, batch size and local iterations (:data:`KEY_FIELDS`). Each is
stored as one entry of a JSON file with the constants, the evidence, and the exact command that
produced it. Two places are searched, in order:

1. the user store, ``$SFLAM_OPT_CALIBRATION_DIR`` or ``~/.cache/sflam-opt/calibrations``, where
   ``sflam-opt calibrate --save`` and ``sflam-opt train --calibrate`` write;
2. the files shipped in the package (``sflam_opt/training/calibrations/*.json``), made by
   ``python benchmarks/theory.py fit`` from committed runs.

:func:`find_calibration` returns the first entry whose configuration equals the run's on every key
field; the trainer then uses its ``[convergence]`` table instead of docs/formulation.md §7's
constants (which describe ViT-B/32 on CIFAR-10, not what is trained) and otherwise warns that the
bound is uncalibrated (:func:`uncalibrated_message`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sflam_opt.errors import TrainingConfigError
from sflam_opt.io import atomic_write_json

__all__ = [
    "FORMAT",
    "KEY_FIELDS",
    "Calibration",
    "calibration_key",
    "find_calibration",
    "save_calibration",
    "uncalibrated_message",
    "user_store",
]

logger = logging.getLogger(__name__)

#: Version of the file layout: ``{"format": 1, "entries": [...]}``.
FORMAT = 1
#: Training options a calibration must match exactly to be used.
KEY_FIELDS = (
    "model",
    "dataset",
    "image_size",
    "pretrained",
    "devices",
    "devices_per_round",
    "alpha",
    "lr",
    "momentum",
    "batch_size",
    "local_iters",
)
_ENV = "SFLAM_OPT_CALIBRATION_DIR"


@dataclass(frozen=True)
class Calibration:
    """One stored calibration.

    Attributes
    ----------
    key : dict
        The configuration it measured (:data:`KEY_FIELDS`); a list value (e.g. of alphas) means
        the calibration's envelope covers runs at each of them.
    convergence : dict of str to float
        ``a``, ``phi0``, ``q``, ``epsilon``: the scenario's ``[convergence]`` table.
    command : str
        The command that produced it.
    source : str
        File it was read from.
    record : dict
        The whole entry (rule, seeds, rounds, evidence).
    """

    key: dict[str, Any]
    convergence: dict[str, float]
    command: str
    source: str
    record: dict[str, Any]

    @property
    def label(self) -> str:
        """Short description for logs and summaries."""
        k = self.key
        return (
            f"calibrated {k['model']}/{k['dataset']} alpha={k['alpha']} lr={k['lr']:g} "
            f"momentum={k['momentum']:g} ({Path(self.source).name})"
        )


def calibration_key(config: Any) -> dict[str, Any]:
    """The :data:`KEY_FIELDS` of a :class:`~sflam_opt.training.config.TrainConfig` (or mapping)."""
    get = config.get if isinstance(config, Mapping) else lambda k, d=None: getattr(config, k, d)
    key = {k: get(k, None) for k in KEY_FIELDS}
    key["devices_per_round"] = get("devices_per_round", None) or get("devices", None)
    key["pretrained"] = bool(get("pretrained", False))
    return key


def _same(a: Any, b: Any) -> bool:
    if isinstance(b, list):
        return isinstance(a, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, list):  # an entry calibrated over several values (e.g. alphas) covers each
        return any(_same(x, b) for x in a)
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b


def user_store() -> Path:
    """Directory of user calibrations (``$SFLAM_OPT_CALIBRATION_DIR`` or the cache default)."""
    env = os.environ.get(_ENV)
    return Path(env) if env else Path.home() / ".cache" / "sflam-opt" / "calibrations"


def _files() -> Iterator[tuple[str, str]]:
    store = user_store()
    if store.is_dir():
        for path in sorted(store.glob("*.json")):
            yield str(path), path.read_text(encoding="utf-8")
    pkg = resources.files("sflam_opt.training") / "calibrations"
    if pkg.is_dir():
        for item in sorted(pkg.iterdir(), key=lambda p: p.name):
            if item.name.endswith(".json"):
                yield f"sflam_opt/training/calibrations/{item.name}", item.read_text("utf-8")


def _entries(source: str, text: str) -> list[dict[str, Any]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        logger.warning("calibration file %s is not JSON; ignored", source)
        return []
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        logger.warning("calibration file %s has an unknown format; ignored", source)
        return []
    return [e for e in doc.get("entries", []) if isinstance(e, dict)]


def find_calibration(config: Any) -> Calibration | None:
    """The stored calibration of exactly this configuration, or None (module docstring)."""
    want = calibration_key(config)
    for source, text in _files():
        for entry in _entries(source, text):
            have = entry.get("config", {})
            if all(_same(have.get(k), want[k]) for k in KEY_FIELDS):
                return Calibration(
                    key=dict(have),
                    convergence={
                        k: float(entry["convergence"][k]) for k in ("a", "phi0", "q", "epsilon")
                    },
                    command=str(entry.get("command", "")),
                    source=source,
                    record=entry,
                )
    return None


def calibrate_command(config: Any) -> str:
    """The ``sflam-opt calibrate`` command that calibrates ``config``'s bound."""
    k = calibration_key(config)
    parts = [
        "sflam-opt calibrate",
        f"--model {k['model']}",
        f"--dataset {k['dataset']}",
        f"--devices {k['devices']}",
        f"--alpha {k['alpha']:g}",
        f"--lr {k['lr']:g}",
        f"--momentum {k['momentum']:g}",
        f"--batch-size {k['batch_size']}",
        f"--local-iters {k['local_iters']}",
    ]
    if k["devices_per_round"] != k["devices"]:
        parts.append(f"--devices-per-round {k['devices_per_round']}")
    if k["image_size"] is not None:
        parts.append(f"--image-size {k['image_size']}")
    if k["pretrained"]:
        parts.append("--pretrained")
    return " ".join(parts) + " --save"


def uncalibrated_message(config: Any) -> str:
    """Warning for a run whose bound has no calibration of its configuration."""
    return (
        "the convergence bound is uncalibrated for this configuration (no stored calibration of "
        "this model, data, devices, alpha, lr, momentum, batch size and local iterations): the "
        "solver's bits and the plotted bound use docs/formulation.md §7's ViT-B/32 constants. "
        f"Calibrate with `{calibrate_command(config)}` or rerun with --calibrate"
    )


def save_calibration(
    entry: Mapping[str, Any], directory: str | os.PathLike[str] | None = None
) -> Path:
    """Add ``entry`` to ``<directory>/<model>_<dataset>.json`` (replacing one with the same key).

    Parameters
    ----------
    entry : mapping
        ``config`` (the key fields), ``convergence``, ``command`` and any evidence.
    directory : path, optional
        Default :func:`user_store`.

    Returns
    -------
    Path
        The file written (atomically).
    """
    key = entry.get("config")
    if not isinstance(key, Mapping) or any(k not in key for k in KEY_FIELDS):
        raise TrainingConfigError(
            f"calibration: entry lacks the configuration fields {', '.join(KEY_FIELDS)}"
        )
    root = Path(directory) if directory is not None else user_store()
    path = root / f"{key['model']}_{key['dataset']}.json"
    entries: list[dict[str, Any]] = []
    if path.is_file():
        entries = _entries(str(path), path.read_text(encoding="utf-8"))
    entries = [
        e for e in entries if not all(_same(e.get("config", {}).get(k), key[k]) for k in KEY_FIELDS)
    ]
    entries.append(dict(entry))
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"format": FORMAT, "entries": entries})
    return path
