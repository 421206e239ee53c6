"""Scenario data: system, model, training, convergence and device parameters (docs/formulation.md §1).

A :class:`Scenario` is an immutable bundle of plain numbers and per-device numpy vectors. It is
loaded from TOML (``Scenario.from_toml``), generated (``Scenario.default``, docs/formulation.md §7) and
written back (``Scenario.to_toml``, exact round trip). Validation is strict: every problem becomes
a one-line :class:`~sflam_opt.errors.ScenarioError` naming the file, table and key, and the fix.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sflam_opt.device_arrays import device_ids, device_vector, gain_values, id_positions
from sflam_opt.device_tables import DeviceColumns, read_device_columns
from sflam_opt.errors import ScenarioError
from sflam_opt.numeric import FloatArray

__all__ = [
    "BitsSpec",
    "ConstraintParams",
    "ConvergenceParams",
    "Devices",
    "ModelParams",
    "ObjectiveParams",
    "ResourceBlocks",
    "Scenario",
    "SystemParams",
    "TrainingParams",
    "gain_db_from_distance",
]


def gain_db_from_distance(distance_m: FloatArray | float) -> FloatArray:
    """Path-loss channel gain in dB, ``-(128.1 + 37.6 log10(d / 1 km))`` (docs/formulation.md §1).

    Parameters
    ----------
    distance_m : float or ndarray, shape (N,)
        Device-to-base-station distance in metres (> 0).

    Returns
    -------
    ndarray, shape (N,)
        Channel power gain in dB (negative).
    """
    d = np.asarray(distance_m, dtype=np.float64)
    return -(128.1 + 37.6 * np.log10(d / 1000.0))


# --------------------------------------------------------------------------------------------
# Sections. Field metadata drives validation: "min" is an exclusive lower bound unless
# "inclusive" is set; "max" is inclusive. The ranges are physical limits (the table in the
# Scenario docstring); inside them every solver works without overflow.
# --------------------------------------------------------------------------------------------


def _f(lo: float | None = 0.0, *, inclusive: bool = False, hi: float | None = None, unit: str = ""):
    return field(metadata={"min": lo, "inclusive": inclusive, "max": hi, "unit": unit})


@dataclass(frozen=True)
class SystemParams:
    """``[system]``: the shared uplink and the server."""

    bandwidth_hz: float = _f(1e3, inclusive=True, hi=1e11, unit="Hz")
    noise_dbm_per_hz: float = _f(-200.0, inclusive=True, hi=-100.0, unit="dBm/Hz")
    downlink_bps: float = _f(1e3, inclusive=True, hi=1e13, unit="bit/s")
    server_cycles_per_s: float = _f(1e6, inclusive=True, hi=1e16, unit="cycles/s")
    kappa: float = _f(0.0, inclusive=True, hi=1e-20, unit="(effective switched capacitance)")


@dataclass(frozen=True)
class ModelParams:
    """``[model]``: the split model (device part = patch embedding)."""

    activation_elems: int = _f(1, inclusive=True, hi=1e12, unit="values per sample")
    device_cycles_per_sample: float = _f(0.0, inclusive=True, hi=1e15, unit="cycles")
    server_cycles_per_sample: float = _f(0.0, inclusive=True, hi=1e15, unit="cycles")
    device_params: int = _f(0, inclusive=True, hi=1e12, unit="parameters")


@dataclass(frozen=True)
class TrainingParams:
    """``[training]``: mini-batch size, local iterations per round and learning rate."""

    batch_size: int = _f(1, inclusive=True, hi=1e6, unit="samples")
    local_iters: int = _f(1, inclusive=True, hi=1e6, unit="mini-batches per round")
    learning_rate: float = _f(hi=1e9)


@dataclass(frozen=True)
class ConvergenceParams:
    """``[convergence]``: constants of the bound of docs/formulation.md §4."""

    a: float = _f(hi=1e9)
    phi0: float = _f(0.0, inclusive=True, hi=1e9)
    q: float = _f(0.0, inclusive=True, hi=1e9)
    epsilon: float = _f(hi=1e9)


@dataclass(frozen=True)
class ObjectiveParams:
    """``[objective]``: weight omega of latency against energy, in [0, 1]."""

    latency_weight: float = _f(0.0, inclusive=True, hi=1.0)


@dataclass(frozen=True)
class ConstraintParams:
    """``[constraints]`` (optional): round deadline (s) and per-device energy cap (J) per round."""

    round_deadline_s: float | None = _f(hi=1e9, unit="s")
    device_energy_j: float | None = _f(hi=1e9, unit="J")


@dataclass(frozen=True)
class ResourceBlocks:
    """``[system] resource_blocks`` and ``block_hz`` (optional): the band as M equal blocks.

    Per-device block gains live in :attr:`Devices.block_gain_db`; the model is described in
    ``docs/formulation.md`` §10.
    """

    count: int
    block_hz: float


@dataclass(frozen=True)
class BitsSpec:
    """``[bits]``: allowed bit widths, sorted, unique, integers in [1, 32]."""

    levels: tuple[int, ...]
    #: How the table was written, so that ``to_toml`` round-trips: ``"levels"`` or ``"range"``.
    style: str = "range"

    @property
    def array(self) -> NDArray[np.int64]:
        """Allowed bit widths as an int array, shape (L,), ascending."""
        return np.asarray(self.levels, dtype=np.int64)

    @property
    def max(self) -> int:
        return self.levels[-1]

    @property
    def min(self) -> int:
        return self.levels[0]


@dataclass(frozen=True, eq=False)
class Devices:
    """One entry per ``[[device]]`` table; every array has shape (N,).

    ``distance_m`` is kept (NaN where a device gave ``gain_db`` directly) so the file round-trips.
    ``block_gain_db`` (shape (N, M), dB) is set only in scenarios with resource blocks.
    """

    ids: tuple[Any, ...]
    gain_db: FloatArray
    cpu_hz: FloatArray
    max_power_w: FloatArray
    samples: NDArray[np.int64]
    distance_m: FloatArray
    block_gain_db: FloatArray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Devices):
            return NotImplemented
        return (
            self.ids == other.ids
            and all(
                np.array_equal(getattr(self, k), getattr(other, k), equal_nan=True)
                for k in ("gain_db", "cpu_hz", "max_power_w", "samples", "distance_m")
            )
            and (self.block_gain_db is None) == (other.block_gain_db is None)
            and (
                self.block_gain_db is None
                or np.array_equal(self.block_gain_db, other.block_gain_db)
            )
        )

    def take(self, index: Sequence[int] | NDArray[np.int64]) -> Devices:
        """Devices at ``index`` (in that order)."""
        idx = np.asarray(index, dtype=np.int64)
        return Devices(
            ids=tuple(self.ids[i] for i in idx.tolist()),
            gain_db=self.gain_db[idx],
            cpu_hz=self.cpu_hz[idx],
            max_power_w=self.max_power_w[idx],
            samples=self.samples[idx],
            distance_m=self.distance_m[idx],
            block_gain_db=None if self.block_gain_db is None else self.block_gain_db[idx],
        )


_SECTIONS: dict[str, type] = {
    "system": SystemParams,
    "model": ModelParams,
    "training": TrainingParams,
    "convergence": ConvergenceParams,
    "objective": ObjectiveParams,
    "constraints": ConstraintParams,
}
_INT_FIELDS = {
    ("model", "activation_elems"),
    ("model", "device_params"),
    ("training", "batch_size"),
    ("training", "local_iters"),
}
_DEVICE_KEYS = (
    "id",
    "gain_db",
    "distance_m",
    "cpu_hz",
    "max_power_w",
    "samples",
    "block_gain_db",
)
#: Valid ranges of the ``[[device]]`` keys (validation metadata, as for the sections).
_DEVICE_RANGES: dict[str, dict[str, Any]] = {
    "gain_db": {"min": -200.0, "inclusive": True, "max": 0.0, "unit": "dB"},
    "distance_m": {"min": 1.0, "inclusive": True, "max": 5e4, "unit": "m"},
    "cpu_hz": {"min": 1e6, "inclusive": True, "max": 1e12, "unit": "cycles/s"},
    "max_power_w": {"min": 1e-6, "inclusive": True, "max": 100.0, "unit": "W"},
    "samples": {"min": 1, "inclusive": True, "max": 1e12, "unit": "samples"},
    # Path loss (at most -15.3 dB at 1 m) plus a Rayleigh fade, which rarely lifts it 15 dB.
    "block_gain_db": {"min": -250.0, "inclusive": True, "max": 20.0, "unit": "dB"},
}
#: Optional ``[system]`` keys of a resource-block scenario (docs/formulation.md §10).
_BLOCK_KEYS = ("resource_blocks", "block_hz")
_BITS_KEYS = ("levels", "min", "max")


@dataclass(frozen=True)
class Scenario:
    """A complete problem instance (docs/formulation.md §1).

    Attributes
    ----------
    system, model, training, convergence, objective, constraints
        The TOML sections as small frozen dataclasses.
    bits : BitsSpec
        Allowed quantization bit widths.
    devices : Devices
        Per-device vectors, shape (N,).
    resource_blocks : ResourceBlocks or None
        The band as discrete blocks (``docs/formulation.md`` §10); None for continuous bandwidth.

    Notes
    -----
    Every field is checked at load against a physical valid range (``docs/formulation.md``
    §11); inside those ranges every solver returns a status without numerical warnings.
    """

    system: SystemParams
    model: ModelParams
    training: TrainingParams
    convergence: ConvergenceParams
    bits: BitsSpec
    objective: ObjectiveParams
    devices: Devices
    constraints: ConstraintParams = ConstraintParams(None, None)
    resource_blocks: ResourceBlocks | None = None

    # ---------------------------------------------------------------- derived quantities
    @property
    def n_devices(self) -> int:
        """Number of devices N."""
        return len(self.devices)

    @property
    def gain(self) -> FloatArray:
        """Linear channel power gain g_n = 10^(gain_db/10), shape (N,)."""
        return np.power(10.0, self.devices.gain_db / 10.0)

    @property
    def noise_w_per_hz(self) -> float:
        """Noise power spectral density N0 in W/Hz."""
        return float(10.0 ** ((self.system.noise_dbm_per_hz - 30.0) / 10.0))

    @property
    def rho(self) -> FloatArray:
        """Data weights rho_n = D_n / sum D, shape (N,)."""
        s = self.devices.samples.astype(np.float64)
        return s / s.sum()

    # ---------------------------------------------------------------- construction
    @classmethod
    def default(cls, devices: int = 10, seed: int = 0) -> Scenario:
        """The docs/formulation.md §7 default scenario with ``devices`` devices drawn with ``seed``.

        Devices are uniform in a 500 m disc (at least 50 m from the base station), CPU frequency
        uniform in [0.5, 2] GHz, Pmax = 0.2 W, data set sizes uniform in [400, 500].
        """
        if isinstance(devices, bool) or not isinstance(devices, int | np.integer) or devices < 1:
            raise ScenarioError(f"devices={devices!r}: need a whole number >= 1")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ScenarioError(f"seed={seed!r}: need a whole number >= 0")
        n = int(devices)
        rng = np.random.default_rng(int(seed))
        # Uniform in the annulus 50 m <= r <= 500 m: area-uniform radius.
        r_in, r_out = 50.0, 500.0
        dist = np.sqrt(rng.uniform(r_in**2, r_out**2, n))
        # Rounded to the centimetre / kHz so the TOML file stays short and round-trips.
        dist = np.round(dist, 2)
        cpu = np.round(rng.uniform(0.5e9, 2.0e9, n), -3)
        samples = rng.integers(400, 501, n)
        devs = Devices(
            ids=tuple(range(n)),
            gain_db=gain_db_from_distance(dist),
            cpu_hz=cpu,
            max_power_w=np.full(n, 0.2),
            samples=samples.astype(np.int64),
            distance_m=dist,
        )
        return cls(
            system=SystemParams(20e6, -174.0, 200e6, 1e13, 1e-28),
            model=ModelParams(37632, 2.9e7, 2.6e10, 2360064),
            training=TrainingParams(128, 20, 0.01),
            convergence=ConvergenceParams(4.6, 0.27, 1.5, 0.5),
            bits=BitsSpec(tuple(range(2, 17)), "range"),
            objective=ObjectiveParams(0.5),
            devices=devs,
            constraints=ConstraintParams(None, None),
        )

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Scenario:
        """Load and validate a scenario file.

        Raises
        ------
        ScenarioError
            One line naming the file, table and key, for any problem (including unreadable or
            unparsable files, with the TOML parser's line number).
        """
        p = Path(path)
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            raise ScenarioError(
                f"{p}: no such scenario file (create one with `sflam-opt scenario new --out {p}`)"
            ) from None
        except OSError as exc:
            raise ScenarioError(f"{p}: cannot read scenario file: {exc.strerror}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ScenarioError(f"{p}: not a UTF-8 text file; a scenario is a TOML file") from None
        return cls.from_toml_string(text, source=str(p))

    @classmethod
    def from_toml_string(cls, text: str, source: str = "<string>") -> Scenario:
        """Parse and validate scenario TOML text; ``source`` names it in error messages."""
        fast = read_device_columns(text)  # large files written by to_toml: columns, not tomllib
        if fast is not None:
            scenario = _Parser(source).from_columns(*fast)
            if scenario is not None:
                return scenario
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ScenarioError(f"{source}: invalid TOML: {exc}") from None
        except ValueError as exc:  # an integer of more digits than Python converts
            reason = str(exc).split(":")[0]
            raise ScenarioError(
                f"{source}: invalid TOML: {reason}; no field takes such a number"
            ) from None
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> Scenario:
        """Validate a parsed TOML document (as from :func:`tomllib.loads`)."""
        return _Parser(source).scenario(data)

    # ---------------------------------------------------------------- transformation
    def replace(self, **sections: Mapping[str, Any] | Any) -> Scenario:
        """Return a copy with some section fields changed, validated like a file.

        ``scenario.replace(model={"activation_elems": 256}, objective={"latency_weight": 1.0})``.
        ``bits`` takes a sequence of levels; ``devices`` a :class:`Devices`.
        """
        doc = self.to_dict()
        for name, change in sections.items():
            if name == "bits":
                doc["bits"] = {"levels": [int(b) for b in change]}
            elif name == "devices":
                if not isinstance(change, Devices):
                    raise ScenarioError("replace(devices=...): pass a Devices object")
                doc["device"] = _devices_to_dicts(change)
            elif name in _SECTIONS:
                if not isinstance(change, Mapping):
                    raise ScenarioError(f"replace({name}=...): pass a mapping of {name} keys")
                doc.setdefault(name, {})
                doc[name] = {**doc[name], **dict(change)}
                doc[name] = {k: v for k, v in doc[name].items() if v is not None}
            else:
                raise ScenarioError(
                    f"replace(): unknown section {name!r}; valid: "
                    f"{', '.join([*_SECTIONS, 'bits', 'devices'])}"
                )
        return Scenario.from_dict(doc, source="replace()")

    def subset(self, index: Sequence[int] | NDArray[np.int64]) -> Scenario:
        """The same scenario restricted to the devices at ``index`` (positions, not ids)."""
        idx = np.asarray(index, dtype=np.int64)
        if idx.ndim != 1 or idx.size == 0:
            raise ScenarioError("subset(index): need a non-empty 1-D list of device positions")
        if idx.min() < 0 or idx.max() >= self.n_devices:
            raise ScenarioError(f"subset(index): positions must lie in 0..{self.n_devices - 1}")
        if np.unique(idx).size != idx.size:
            raise ScenarioError("subset(index): device positions must be unique")
        return dataclasses.replace(self, devices=self.devices.take(idx))

    # ---------------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        """The TOML document as plain Python data (what :meth:`from_dict` accepts)."""
        doc = self.to_dict_without_devices()
        doc["device"] = _devices_to_dicts(self.devices)
        return doc

    def to_dict_without_devices(self) -> dict[str, Any]:
        """:meth:`to_dict` without the ``device`` list (cheap for any number of devices)."""
        doc: dict[str, Any] = {}
        for name in ("system", "model", "training", "convergence"):
            doc[name] = dataclasses.asdict(getattr(self, name))
        if self.resource_blocks is not None:
            rb = self.resource_blocks
            doc["system"].update(resource_blocks=rb.count, block_hz=rb.block_hz)
        if self.bits.style == "levels":
            doc["bits"] = {"levels": list(self.bits.levels)}
        else:
            doc["bits"] = {"min": self.bits.min, "max": self.bits.max}
        doc["objective"] = dataclasses.asdict(self.objective)
        cons = {k: v for k, v in dataclasses.asdict(self.constraints).items() if v is not None}
        if cons:
            doc["constraints"] = cons
        return doc

    def to_toml(self) -> str:
        """Serialize as TOML; ``Scenario.from_toml_string(s.to_toml()) == s`` exactly."""
        doc = self.to_dict_without_devices()
        out: list[str] = []
        for name in (
            "system",
            "model",
            "training",
            "convergence",
            "bits",
            "objective",
            "constraints",
        ):
            if name not in doc:
                continue
            out.append(f"[{name}]")
            out.extend(f"{k} = {_toml_value(v)}" for k, v in doc[name].items())
            out.append("")
        # Device tables dominate large files: format them column-wise for speed.
        d = self.devices
        ids = [_toml_value(i) for i in d.ids]
        loc = [
            f"gain_db = {_float(g)}" if math.isnan(r) else f"distance_m = {_float(r)}"
            for r, g in zip(d.distance_m.tolist(), d.gain_db.tolist(), strict=True)
        ]
        cpu = [_float(x) for x in d.cpu_hz.tolist()]
        pmax = [_float(x) for x in d.max_power_w.tolist()]
        smp = [str(int(x)) for x in d.samples.tolist()]
        blk = (
            [""] * len(d)
            if d.block_gain_db is None
            else [f"block_gain_db = {_toml_value(row)}\n" for row in d.block_gain_db.tolist()]
        )
        out.extend(
            f"[[device]]\nid = {i}\n{lo}\ncpu_hz = {c}\nmax_power_w = {p}\nsamples = {s}\n{g}"
            for i, lo, c, p, s, g in zip(ids, loc, cpu, pmax, smp, blk, strict=True)
        )
        return "\n".join(out).rstrip("\n") + "\n"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scenario):
            return NotImplemented
        return all(
            getattr(self, f.name) == getattr(other, f.name) for f in dataclasses.fields(self)
        )

    __hash__ = None  # type: ignore[assignment]

    # ---------------------------------------------------------------- helpers for host systems
    @classmethod
    def from_arrays(
        cls,
        *,
        gain_db: ArrayLike | None = None,
        distance_m: ArrayLike | None = None,
        cpu_hz: ArrayLike = 1.0e9,
        max_power_w: ArrayLike = 0.2,
        samples: ArrayLike = 500,
        ids: Sequence[Any] | None = None,
        **sections: Mapping[str, Any] | Any,
    ) -> Scenario:
        """Build a scenario in code from per-device arrays, with defaults for everything else.

        The sections (system, model, training, convergence, bits, objective) default to those of
        :meth:`Scenario.default`; override any of them as in :meth:`replace`, e.g.
        ``system={"bandwidth_hz": 10e6}``, ``bits=[2, 4, 8]``,
        ``constraints={"round_deadline_s": 30.0}``.

        Parameters
        ----------
        gain_db : array_like, shape (N,), optional
            Channel power gain of each device in dB. Give exactly one of ``gain_db`` and
            ``distance_m``.
        distance_m : array_like, shape (N,), optional
            Distance to the base station in metres (> 0); the gain follows the path-loss model
            of :func:`gain_db_from_distance`.
        cpu_hz : float or array_like, shape (N,)
            Device CPU frequency in cycles/s (> 0).
        max_power_w : float or array_like, shape (N,)
            Transmit power cap in W (> 0).
        samples : int or array_like of int, shape (N,)
            Local data set sizes (whole numbers > 0).
        ids : sequence, optional
            Unique device ids (whole numbers or strings); default ``0 .. N-1``.
        **sections
            Section overrides, as in :meth:`replace`.

        Raises
        ------
        ScenarioError
            One line naming the field (and device index) and the fix.
        """
        if (gain_db is None) == (distance_m is None):
            raise ScenarioError("from_arrays(): give exactly one of gain_db= or distance_m=")
        given = "gain_db" if gain_db is not None else "distance_m"
        loc = np.atleast_1d(np.asarray(gain_db if gain_db is not None else distance_m))
        if loc.ndim != 1 or loc.size == 0:
            raise ScenarioError(f"from_arrays(): {given} must be a non-empty 1-D array")
        n = loc.size
        loc = device_vector(given, loc, n, positive=given == "distance_m")
        cpu = device_vector("cpu_hz", cpu_hz, n, positive=True)
        pmax = device_vector("max_power_w", max_power_w, n, positive=True)
        smp = device_vector("samples", samples, n, positive=True)
        if not np.array_equal(smp, np.round(smp)):
            bad = int(np.flatnonzero(smp != np.round(smp))[0])
            raise ScenarioError(
                f"from_arrays(): samples[{bad}] = {float(smp[bad])!r}: need a whole number of samples"
            )
        id_tuple = device_ids(ids, n)
        dist = loc if given == "distance_m" else np.full(n, np.nan)
        devs = Devices(
            ids=id_tuple,
            gain_db=gain_db_from_distance(dist) if given == "distance_m" else loc,
            cpu_hz=cpu,
            max_power_w=pmax,
            samples=smp.astype(np.int64),
            distance_m=dist,
        )
        # Sections are validated on a one-device copy (fast), then the devices are swapped in.
        base = cls.default(devices=1, seed=0)
        if sections:
            base = base.replace(**sections)
        return dataclasses.replace(base, devices=devs)

    def positions(self, ids: Sequence[Any]) -> NDArray[np.int64]:
        """Positions of the devices with these ids, in the order given, shape (len(ids),).

        Raises
        ------
        ScenarioError
            Naming the first unknown or repeated id.
        """
        return id_positions(self.devices.ids, ids)

    def select(self, ids: Sequence[Any]) -> Scenario:
        """The same scenario restricted to the devices with these ids, in that order.

        Raises
        ------
        ScenarioError
            If ``ids`` is empty, or names an unknown or repeated id.
        """
        if isinstance(ids, str | bytes) or not isinstance(ids, Sequence | np.ndarray):
            raise ScenarioError(f"select(ids): need a list of device ids, got {ids!r}")
        if len(ids) == 0:
            raise ScenarioError("select(ids): need at least one device id")
        return dataclasses.replace(self, devices=self.devices.take(self.positions(ids)))

    def with_gains(self, gain_db: Mapping[Any, float]) -> Scenario:
        """A copy with the channel gains (dB) of some devices replaced, ``{id: dB}``.

        Devices not named keep their gains. A replaced gain is stored as a direct ``gain_db``
        (its ``distance_m`` becomes NaN), so :meth:`to_toml` writes what is used.

        Raises
        ------
        ScenarioError
            Naming the first unknown id or non-finite gain.
        """
        if not isinstance(gain_db, Mapping):
            raise ScenarioError(f"with_gains(gain_db): need a mapping {{id: dB}}, got {gain_db!r}")
        if not gain_db:
            return self
        pos = self.positions(list(gain_db))
        vals = gain_values(gain_db)
        d = self.devices
        gain = d.gain_db.copy()
        gain[pos] = vals
        dist = d.distance_m.copy()
        dist[pos] = np.nan
        return dataclasses.replace(
            self, devices=dataclasses.replace(d, gain_db=gain, distance_m=dist)
        )


def _float(x: float) -> str:
    if math.isnan(x) or math.isinf(x):  # never produced by a validated scenario
        raise ScenarioError(f"cannot write non-finite number {x!r} to TOML")
    return repr(float(x))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        return _float(float(v))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ScenarioError(f"cannot write value {v!r} of type {type(v).__name__} to TOML")


def _devices_to_dicts(d: Devices) -> list[dict[str, Any]]:
    rows = []
    for i in range(len(d)):
        row: dict[str, Any] = {"id": d.ids[i]}
        if np.isnan(d.distance_m[i]):
            row["gain_db"] = float(d.gain_db[i])
        else:
            row["distance_m"] = float(d.distance_m[i])
        row["cpu_hz"] = float(d.cpu_hz[i])
        row["max_power_w"] = float(d.max_power_w[i])
        row["samples"] = int(d.samples[i])
        if d.block_gain_db is not None:
            row["block_gain_db"] = d.block_gain_db[i].tolist()
        rows.append(row)
    return rows


def _short(v: float | int) -> str:
    """``repr(v)``, shortened for integers of many digits."""
    if isinstance(v, int) and abs(v) >= 10**30:
        digits = len(str(abs(v)))
        return f"{str(v)[:8]}... ({digits} digits)"
    return repr(v)


def _suggest(key: str, valid: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; valid keys: {', '.join(valid)}"


class _Parser:
    """Validating converter from a parsed TOML document to a :class:`Scenario`."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, msg: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {where}: {msg}")

    def scenario(self, data: Mapping[str, Any]) -> Scenario:
        if not isinstance(data, Mapping):
            raise self.fail("document", "expected a TOML table at the top level")
        valid = [*_SECTIONS, "bits", "device"]
        for key in data:
            if key not in valid:
                raise self.fail(f"[{key}]", "unknown table" + _suggest(key, valid))
        # Typos inside the tables that are present are reported before missing tables.
        for name, cls in _SECTIONS.items():
            table = data.get(name)
            if isinstance(table, Mapping):
                keys = [f.name for f in dataclasses.fields(cls)]
                keys += list(_BLOCK_KEYS) if name == "system" else []
                for key in table:
                    if key not in keys:
                        raise self.fail(f"[{name}] {key}", "unknown key" + _suggest(key, keys))
        required = ["system", "model", "training", "convergence", "bits", "objective"]
        for name in required:
            if name not in data:
                raise self.fail(
                    f"[{name}]",
                    f"missing table; add a [{name}] table "
                    "(see `sflam-opt scenario new` for a complete example)",
                )
        blocks, system = self.resource_blocks(data["system"])
        sections = {
            name: self.section(name, system if name == "system" else data.get(name, {}))
            for name in _SECTIONS
        }
        devices = self.devices(data.get("device"), None if blocks is None else blocks.count)
        return Scenario(
            system=sections["system"],
            model=sections["model"],
            training=sections["training"],
            convergence=sections["convergence"],
            objective=sections["objective"],
            constraints=sections["constraints"],
            bits=self.bits(data["bits"]),
            devices=devices,
            resource_blocks=blocks,
        )

    def resource_blocks(self, table: Any) -> tuple[ResourceBlocks | None, Any]:
        """``[system] resource_blocks``/``block_hz``, and the table without them (B = M W)."""
        if not isinstance(table, Mapping) or not any(k in table for k in _BLOCK_KEYS):
            return None, table
        for key in _BLOCK_KEYS:
            if key not in table:
                raise self.fail(
                    f"[system] {key}", "missing key; give both resource_blocks and block_hz"
                )
        m = int(
            self.number(
                "[system] resource_blocks", table["resource_blocks"], {"min": 0}, integer=True
            )
        )
        w = float(self.number("[system] block_hz", table["block_hz"], {"min": 0.0, "unit": "Hz"}))
        rest = {k: v for k, v in table.items() if k not in _BLOCK_KEYS}
        if "bandwidth_hz" in rest:
            b = self.number(
                "[system] bandwidth_hz", rest["bandwidth_hz"], {"min": 0.0, "unit": "Hz"}
            )
            if not math.isclose(b, m * w, rel_tol=1e-9):
                raise self.fail(
                    "[system] bandwidth_hz",
                    f"{b:g} Hz is not resource_blocks x block_hz = {m * w:g} Hz; "
                    "drop bandwidth_hz or set it to resource_blocks x block_hz",
                )
        rest["bandwidth_hz"] = m * w
        return ResourceBlocks(m, w), rest

    def section(self, name: str, table: Any) -> Any:
        cls = _SECTIONS[name]
        if not isinstance(table, Mapping):
            raise self.fail(f"[{name}]", "must be a table, e.g. [" + name + "]")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in table:
            if key not in fields:
                raise self.fail(f"[{name}] {key}", "unknown key" + _suggest(key, list(fields)))
        values: dict[str, Any] = {}
        optional = name == "constraints"
        for key, f in fields.items():
            where = f"[{name}] {key}"
            if key not in table:
                if optional:
                    values[key] = None
                    continue
                raise self.fail(where, "missing key; add it to the table")
            values[key] = self.number(
                where, table[key], f.metadata, integer=(name, key) in _INT_FIELDS
            )
        return cls(**values)

    def number(
        self,
        where: str,
        v: Any,
        meta: Mapping[str, Any],
        integer: bool = False,
    ) -> float | int:
        if isinstance(v, bool) or not isinstance(v, int | float):
            kind = "a whole number" if integer else "a number"
            raise self.fail(where, f"expected {kind}, got {type(v).__name__} {v!r}")
        if isinstance(v, float) and not math.isfinite(v):
            raise self.fail(where, f"must be finite, got {v!r}")
        if integer and isinstance(v, float) and not v.is_integer():
            raise self.fail(where, f"expected a whole number, got {v!r}")
        # Compared before any conversion: Python compares int and float exactly, so an integer
        # of hundreds of digits is reported here instead of overflowing float() or int64.
        lo, hi, inclusive = meta.get("min"), meta.get("max"), meta.get("inclusive")
        if (lo is not None and (v < lo or (v == lo and not inclusive))) or (
            hi is not None and v > hi
        ):
            unit = f" {meta['unit']}" if meta.get("unit") else ""
            left = ("[" if inclusive else "(") + (f"{lo:g}" if lo is not None else "-inf")
            right = f"{hi:g}]" if hi is not None else "inf)"
            raise self.fail(
                where,
                f"{_short(v)} is outside the valid range {left}, {right}{unit}; "
                "give a value in that range",
            )
        return int(v) if integer else float(v)

    def bits(self, table: Any) -> BitsSpec:
        if not isinstance(table, Mapping):
            raise self.fail("[bits]", "must be a table with levels = [...] or min/max")
        for key in table:
            if key not in _BITS_KEYS:
                raise self.fail(f"[bits] {key}", "unknown key" + _suggest(key, _BITS_KEYS))
        if "levels" in table:
            if "min" in table or "max" in table:
                raise self.fail("[bits]", "give either levels = [...] or min/max, not both")
            levels = table["levels"]
            if not isinstance(levels, list):
                raise self.fail("[bits] levels", "expected a list of whole numbers, e.g. [2, 4, 8]")
            if not levels:
                raise self.fail("[bits] levels", "empty bit set; list at least one width in 1..32")
            vals = [self.bit(f"[bits] levels[{i}]", b) for i, b in enumerate(levels)]
            if len(set(vals)) != len(vals):
                raise self.fail("[bits] levels", f"duplicate bit widths in {vals}")
            return BitsSpec(tuple(sorted(vals)), "levels")
        for key in ("min", "max"):
            if key not in table:
                raise self.fail(f"[bits] {key}", "missing key; give min and max, or levels = [...]")
        lo, hi = self.bit("[bits] min", table["min"]), self.bit("[bits] max", table["max"])
        if lo > hi:
            raise self.fail("[bits]", f"min = {lo} > max = {hi}; the bit set is empty")
        return BitsSpec(tuple(range(lo, hi + 1)), "range")

    def bit(self, where: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(where, f"expected a whole number of bits in 1..32, got {v!r}")
        if not 1 <= v <= 32:
            raise self.fail(where, f"bit width must be in 1..32, got {v}")
        return int(v)

    def from_columns(self, head: str, cols: DeviceColumns) -> Scenario | None:
        """The scenario of ``head`` and device columns, or None if any check fails (the caller
        then parses the whole text the general way, which reports the first problem)."""
        try:
            data = tomllib.loads(head)
        except (tomllib.TOMLDecodeError, ValueError):
            return None
        if "device" in data or "resource_blocks" in data.get("system", {}):
            return None
        ok = len(set(cols.ids)) == len(cols.ids)
        for key, values in (
            ("gain_db", cols.gain_db[~np.isnan(cols.gain_db)]),
            ("distance_m", cols.distance_m[~np.isnan(cols.distance_m)]),
            ("cpu_hz", cols.cpu_hz),
            ("max_power_w", cols.max_power_w),
            ("samples", cols.samples),
        ):
            meta = _DEVICE_RANGES[key]
            ok = ok and bool(np.all((values >= meta["min"]) & (values <= meta["max"])))
        ok = ok and bool(np.all(cols.samples == np.floor(cols.samples)))
        if not ok:
            return None
        gain = cols.gain_db.copy()
        from_dist = ~np.isnan(cols.distance_m)
        gain[from_dist] = gain_db_from_distance(cols.distance_m[from_dist])
        devices = Devices(
            cols.ids,
            gain,
            cols.cpu_hz,
            cols.max_power_w,
            cols.samples.astype(np.int64),
            cols.distance_m,
        )
        try:
            return self.scenario({**data, "device": devices})
        except ScenarioError:
            return None

    def devices(self, tables: Any, blocks: int | None = None) -> Devices:
        if isinstance(tables, Devices) and blocks is None:  # read and checked by from_columns
            return tables
        if tables is None or (isinstance(tables, list) and not tables):
            raise self.fail("[[device]]", "no devices; add at least one [[device]] table")
        if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
            raise self.fail("[[device]]", "must be an array of tables written as [[device]]")
        n = len(tables)
        ids: list[Any] = []
        gain = np.full(n, np.nan)
        dist = np.full(n, np.nan)
        cpu = np.empty(n)
        pmax = np.empty(n)
        samples = np.empty(n, dtype=np.int64)
        seen: dict[Any, int] = {}
        for i, t in enumerate(tables):
            for key in t:
                if key not in _DEVICE_KEYS:
                    raise self.fail(
                        f"[[device]] #{i + 1} {key}", "unknown key" + _suggest(key, _DEVICE_KEYS)
                    )
            tag = f"[[device]] #{i + 1}"
            if "id" not in t:
                raise self.fail(f"{tag} id", "missing key; give each device a unique id")
            did = t["id"]
            if isinstance(did, bool) or not isinstance(did, int | str):
                raise self.fail(f"{tag} id", f"expected a whole number or a string, got {did!r}")
            if did in seen:
                raise self.fail(
                    f"{tag} id",
                    f"duplicate device id {did!r} "
                    f"(also device #{seen[did] + 1}); ids must be unique",
                )
            seen[did] = i
            ids.append(did)
            tag = f"[[device]] id={did!r}"
            if blocks is None and "block_gain_db" in t:
                raise self.fail(
                    f"{tag} block_gain_db",
                    "only with resource blocks; set [system] resource_blocks and block_hz",
                )
            has_g, has_d = "gain_db" in t, "distance_m" in t
            if has_g == has_d:
                raise self.fail(tag, "give exactly one of gain_db or distance_m")
            if has_g:
                gain[i] = self.number(f"{tag} gain_db", t["gain_db"], _DEVICE_RANGES["gain_db"])
            else:
                dist[i] = self.number(
                    f"{tag} distance_m", t["distance_m"], _DEVICE_RANGES["distance_m"]
                )
            for key, arr in (("cpu_hz", cpu), ("max_power_w", pmax)):
                if key not in t:
                    raise self.fail(f"{tag} {key}", "missing key; add it to the device table")
                arr[i] = self.number(f"{tag} {key}", t[key], _DEVICE_RANGES[key])
            if "samples" not in t:
                raise self.fail(f"{tag} samples", "missing key; add it to the device table")
            samples[i] = self.number(
                f"{tag} samples", t["samples"], _DEVICE_RANGES["samples"], integer=True
            )
        from_dist = ~np.isnan(dist)
        gain[from_dist] = gain_db_from_distance(dist[from_dist])
        block_gain = None if blocks is None else self.block_gains(tables, ids, blocks)
        return Devices(tuple(ids), gain, cpu, pmax, samples, dist, block_gain)

    def block_gains(self, tables: list[Any], ids: list[Any], m: int) -> FloatArray:
        """``block_gain_db = [M values]`` of every device, shape (N, M) (docs/formulation.md §10)."""
        if m < len(tables):
            raise self.fail(
                "[system] resource_blocks",
                f"= {m} blocks for {len(tables)} devices; every device needs at least one block",
            )
        out = np.empty((len(tables), m))
        for i, (t, did) in enumerate(zip(tables, ids, strict=True)):
            where = f"[[device]] id={did!r} block_gain_db"
            row = t.get("block_gain_db")
            if not isinstance(row, list) or len(row) != m:
                raise self.fail(where, f"need a list of resource_blocks = {m} gains in dB")
            meta = _DEVICE_RANGES["block_gain_db"]
            out[i] = [self.number(f"{where}[{k}]", v, meta) for k, v in enumerate(row)]
        return out
