"""Validation of scenario documents: every problem is one line naming the table, key and fix.

:class:`ScenarioParser` turns a parsed TOML document (or the device columns of a large file,
:mod:`sflam_opt.device_tables`) into the parts of a :class:`sflam_opt.scenario.Scenario`, checking
every key against :mod:`sflam_opt.scenario_parts` (types, valid ranges, unknown keys with a
suggestion).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sflam_opt.device_tables import DeviceColumns
from sflam_opt.errors import ScenarioError
from sflam_opt.numeric import FloatArray
from sflam_opt.scenario_parts import (
    BITS_KEYS,
    BLOCK_KEYS,
    DEVICE_KEYS,
    DEVICE_RANGES,
    INT_FIELDS,
    SECTIONS,
    BitsSpec,
    Devices,
    ResourceBlocks,
    gain_db_from_distance,
)
from sflam_opt.validation import is_int, is_real

__all__ = ["ScenarioParser", "short_number", "suggest_key"]


def short_number(v: float | int) -> str:
    """``repr(v)``, shortened for integers of many digits."""
    if isinstance(v, int) and abs(v) >= 10**30:
        digits = len(str(abs(v)))
        return f"{str(v)[:8]}... ({digits} digits)"
    return repr(v)


def suggest_key(key: str, valid: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; valid keys: {', '.join(valid)}"


class ScenarioParser:
    """Validating converter from a parsed TOML document to the parts of a scenario.

    :meth:`scenario` returns the keyword arguments of :class:`sflam_opt.scenario.Scenario`.
    """

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, msg: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {where}: {msg}")

    def scenario(self, data: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise self.fail("document", "expected a TOML table at the top level")
        valid = [*SECTIONS, "bits", "device"]
        for key in data:
            if key not in valid:
                raise self.fail(f"[{key}]", "unknown table" + suggest_key(key, valid))
        # Typos inside the tables that are present are reported before missing tables.
        for name, cls in SECTIONS.items():
            table = data.get(name)
            if isinstance(table, Mapping):
                keys = [f.name for f in dataclasses.fields(cls)]
                keys += list(BLOCK_KEYS) if name == "system" else []
                for key in table:
                    if key not in keys:
                        raise self.fail(f"[{name}] {key}", "unknown key" + suggest_key(key, keys))
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
            for name in SECTIONS
        }
        devices = self.devices(data.get("device"), None if blocks is None else blocks.count)
        return dict(
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
        if not isinstance(table, Mapping) or not any(k in table for k in BLOCK_KEYS):
            return None, table
        for key in BLOCK_KEYS:
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
        rest = {k: v for k, v in table.items() if k not in BLOCK_KEYS}
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
        cls = SECTIONS[name]
        if not isinstance(table, Mapping):
            raise self.fail(f"[{name}]", "must be a table, e.g. [" + name + "]")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in table:
            if key not in fields:
                raise self.fail(f"[{name}] {key}", "unknown key" + suggest_key(key, list(fields)))
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
                where, table[key], f.metadata, integer=(name, key) in INT_FIELDS
            )
        return cls(**values)

    def number(
        self,
        where: str,
        v: Any,
        meta: Mapping[str, Any],
        integer: bool = False,
    ) -> float | int:
        if not is_real(v):
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
                f"{short_number(v)} is outside the valid range {left}, {right}{unit}; "
                "give a value in that range",
            )
        return int(v) if integer else float(v)

    def bits(self, table: Any) -> BitsSpec:
        if not isinstance(table, Mapping):
            raise self.fail("[bits]", "must be a table with levels = [...] or min/max")
        for key in table:
            if key not in BITS_KEYS:
                raise self.fail(f"[bits] {key}", "unknown key" + suggest_key(key, BITS_KEYS))
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
        if not is_int(v):
            raise self.fail(where, f"expected a whole number of bits in 1..32, got {v!r}")
        if not 1 <= v <= 32:
            raise self.fail(where, f"bit width must be in 1..32, got {v}")
        return int(v)

    def from_columns(self, head: str, cols: DeviceColumns) -> dict[str, Any] | None:
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
            meta = DEVICE_RANGES[key]
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
                if key not in DEVICE_KEYS:
                    raise self.fail(
                        f"[[device]] #{i + 1} {key}", "unknown key" + suggest_key(key, DEVICE_KEYS)
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
                gain[i] = self.number(f"{tag} gain_db", t["gain_db"], DEVICE_RANGES["gain_db"])
            else:
                dist[i] = self.number(
                    f"{tag} distance_m", t["distance_m"], DEVICE_RANGES["distance_m"]
                )
            for key, arr in (("cpu_hz", cpu), ("max_power_w", pmax)):
                if key not in t:
                    raise self.fail(f"{tag} {key}", "missing key; add it to the device table")
                arr[i] = self.number(f"{tag} {key}", t[key], DEVICE_RANGES[key])
            if "samples" not in t:
                raise self.fail(f"{tag} samples", "missing key; add it to the device table")
            samples[i] = self.number(
                f"{tag} samples", t["samples"], DEVICE_RANGES["samples"], integer=True
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
            meta = DEVICE_RANGES["block_gain_db"]
            out[i] = [self.number(f"{where}[{k}]", v, meta) for k, v in enumerate(row)]
        return out
