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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sflam_opt.device_arrays import (
    block_gain_rows,
    device_ids,
    device_vector,
    gain_values,
    id_positions,
)
from sflam_opt.device_tables import read_device_columns
from sflam_opt.errors import ScenarioError
from sflam_opt.numeric import FloatArray
from sflam_opt.scenario_parser import ScenarioParser
from sflam_opt.scenario_parts import (
    SECTIONS,
    BitsSpec,
    ConstraintParams,
    ConvergenceParams,
    Devices,
    ModelParams,
    ObjectiveParams,
    ResourceBlocks,
    SystemParams,
    TrainingParams,
    gain_db_from_distance,
)
from sflam_opt.validation import is_int

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

    # gain and rho are cached: a solve at N = 1e6 reads each 5-15 times (~7 ms a conversion).
    # A Scenario is immutable and replace()/with_gains()/select() build a new one, so the cache
    # never outlives its inputs; the arrays are read-only so that no caller can spoil it.
    @cached_property
    def gain(self) -> FloatArray:
        """Linear channel power gain g_n = 10^(gain_db/10), shape (N,), read-only."""
        return _read_only(np.power(10.0, self.devices.gain_db / 10.0))

    @property
    def noise_w_per_hz(self) -> float:
        """Noise power spectral density N0 in W/Hz."""
        return float(10.0 ** ((self.system.noise_dbm_per_hz - 30.0) / 10.0))

    @cached_property
    def rho(self) -> FloatArray:
        """Data weights rho_n = D_n / sum D, shape (N,), read-only (cached like :attr:`gain`)."""
        s = self.devices.samples.astype(np.float64)
        return _read_only(s / s.sum())

    # ---------------------------------------------------------------- construction
    @classmethod
    def default(cls, devices: int = 10, seed: int = 0) -> Scenario:
        """The docs/formulation.md §7 default scenario with ``devices`` devices drawn with ``seed``.

        Devices are uniform in a 500 m disc (at least 50 m from the base station), CPU frequency
        uniform in [0.5, 2] GHz, Pmax = 0.2 W, data set sizes uniform in [400, 500].
        """
        if not is_int(devices) or devices < 1:
            raise ScenarioError(f"devices={devices!r}: need a whole number >= 1")
        if not is_int(seed) or seed < 0:
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
            parts = ScenarioParser(source).from_columns(*fast)
            if parts is not None:
                return cls(**parts)
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
        return cls(**ScenarioParser(source).scenario(data))

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
            elif name in SECTIONS:
                if not isinstance(change, Mapping):
                    raise ScenarioError(f"replace({name}=...): pass a mapping of {name} keys")
                doc.setdefault(name, {})
                doc[name] = {**doc[name], **dict(change)}
                doc[name] = {k: v for k, v in doc[name].items() if v is not None}
            else:
                raise ScenarioError(
                    f"replace(): unknown section {name!r}; valid: "
                    f"{', '.join([*SECTIONS, 'bits', 'devices'])}"
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
        return id_positions(self.devices.ids, ids, self.devices.id_index)

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

    def with_gains(
        self,
        gain_db: Mapping[Any, float] | None = None,
        block_gain_db: Mapping[Any, ArrayLike] | None = None,
    ) -> Scenario:
        """A copy with the channel gains (dB) of some devices replaced, ``{id: dB}``.

        Devices not named keep their gains. A replaced gain is stored as a direct ``gain_db``
        (its ``distance_m`` becomes NaN), so :meth:`to_toml` writes what is used.

        Parameters
        ----------
        gain_db : mapping of device id to float, optional
            New channel gains in dB, each in the valid range of ``docs/formulation.md`` §11.
        block_gain_db : mapping of device id to array_like, shape (M,), optional
            New per-block gains in dB (resource-block scenarios only, ``docs/formulation.md``
            §10), M per device, each in the valid range of §11.

        Raises
        ------
        ScenarioError
            Naming the first unknown id, or a gain that is not finite, outside its valid range
            or (block gains) not M long.
        """
        devices = self._regained(gain_db, block_gain_db)
        return self if devices is self.devices else dataclasses.replace(self, devices=devices)

    def for_round(
        self,
        devices: Iterable[Any] | None = None,
        gain_db: Mapping[Any, float] | None = None,
        block_gain_db: Mapping[Any, ArrayLike] | None = None,
    ) -> Scenario:
        """One round's problem: the devices taking part, in that order, with the round's gains.

        The one way to build a round's scenario (the :class:`~sflam_opt.allocator.Allocator`
        uses it): equal to ``with_gains(gain_db, block_gain_db).select(devices)``, every other
        field (sections, bits, resource blocks, constraints) kept.

        Parameters
        ----------
        devices : iterable of ids, optional
            The participants, in the order the round lists them; all devices when None.
        gain_db, block_gain_db : mapping, optional
            As for :meth:`with_gains`. Ids of devices that do not take part are checked and
            ignored.

        Raises
        ------
        ScenarioError
            One line naming the argument and the entry: an unknown or repeated id, an empty
            ``devices``, or a gain as in :meth:`with_gains`.
        """
        return self.round_positions(devices, gain_db, block_gain_db)[0]

    def round_positions(
        self,
        devices: Iterable[Any] | None = None,
        gain_db: Mapping[Any, float] | None = None,
        block_gain_db: Mapping[Any, ArrayLike] | None = None,
    ) -> tuple[Scenario, NDArray[np.int64] | None]:
        """:meth:`for_round` and the participants' positions in this scenario (None: all)."""
        idx = ids = None
        if devices is not None:
            if isinstance(devices, str | bytes | Mapping) or not isinstance(devices, Iterable):
                raise ScenarioError(
                    f"devices={devices!r}: need a list of device ids, or None for all"
                )
            ids = list(devices)
            if not ids:
                raise ScenarioError("devices=[]: need at least one device id")
            idx = self._positions_of("devices", ids)
        d = self._regained(gain_db, block_gain_db, ids, idx)
        if idx is not None:
            d = d.take(idx)
        return (self if d is self.devices else dataclasses.replace(self, devices=d)), idx

    def _positions_of(
        self,
        name: str,
        keys: list[Any],
        ids: list[Any] | None = None,
        idx: NDArray[np.int64] | None = None,
    ) -> NDArray[np.int64]:
        """Positions of ``keys``; ``idx`` when they are ``ids`` (a host's usual gain map)."""
        if idx is not None and len(keys) == len(idx) and keys == ids:
            return idx
        try:
            return self.positions(keys)
        except ScenarioError as exc:
            raise ScenarioError(f"{name}: {exc}") from None

    def _regained(
        self,
        gain_db: Mapping[Any, float] | None,
        block_gain_db: Mapping[Any, ArrayLike] | None,
        ids: list[Any] | None = None,
        idx: NDArray[np.int64] | None = None,
    ) -> Devices:
        """The devices with these gains replaced (the same object when there are none)."""
        d = self.devices
        changes: dict[str, Any] = {}
        for name, table in (("gain_db", gain_db), ("block_gain_db", block_gain_db)):
            if table is not None and not isinstance(table, Mapping):
                unit = "dB" if name == "gain_db" else "[M dB]"
                raise ScenarioError(
                    f"{name}: need a mapping {{device id: {unit}}}, got {type(table).__name__}"
                )
        if gain_db:
            pos = self._positions_of("gain_db", list(gain_db), ids, idx)
            gain, dist = d.gain_db.copy(), d.distance_m.copy()
            gain[pos] = gain_values(gain_db)
            dist[pos] = np.nan
            changes.update(gain_db=gain, distance_m=dist)
        if block_gain_db:
            if self.resource_blocks is None or d.block_gain_db is None:
                raise ScenarioError(
                    "block_gain_db: the scenario has no resource blocks; give block gains only "
                    "with [system] resource_blocks and block_hz (docs/formulation.md §10)"
                )
            pos = self._positions_of("block_gain_db", list(block_gain_db), ids, idx)
            blk = d.block_gain_db.copy()
            blk[pos] = block_gain_rows(block_gain_db, self.resource_blocks.count)
            changes["block_gain_db"] = blk
        return dataclasses.replace(d, **changes) if changes else d


def _read_only(a: FloatArray) -> FloatArray:
    a.flags.writeable = False
    return a


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
