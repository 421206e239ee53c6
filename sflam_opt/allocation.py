"""The decision: each device's quantization bits, bandwidth and transmit power (docs/formulation.md §1)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sflam_opt.errors import AllocationError
from sflam_opt.io import atomic_write_text
from sflam_opt.jsonio import ColumnRows
from sflam_opt.scenario import Scenario

__all__ = ["Allocation", "check_block_lists", "scenario_sha256"]

#: Valid ranges of an allocation file's per-device numbers; outside them a value is not a
#: decision (a bit width is a small whole number) and could overflow the cost model.
_RANGES = {"bits": (1, 64), "bandwidth_hz": (0.0, 1e15), "power_w": (0.0, 1e6)}


def scenario_sha256(scenario: Scenario) -> str:
    """SHA-256 (hex) of a scenario's content: the fingerprint allocations carry.

    Hashes the TOML of the scalar tables and the raw bytes of the device vectors (and the ids),
    so that it costs a fraction of writing the scenario out, even for millions of devices.
    """
    doc = scenario.to_dict_without_devices()
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8"))
    d = scenario.devices
    for arr in (d.gain_db, d.distance_m, d.cpu_hz, d.max_power_w):
        digest.update(np.ascontiguousarray(arr, dtype="<f8").tobytes())
    digest.update(np.ascontiguousarray(d.samples, dtype="<i8").tobytes())
    if d.block_gain_db is not None:
        digest.update(np.ascontiguousarray(d.block_gain_db, dtype="<f8").tobytes())
    digest.update("\x00".join(map(repr, d.ids)).encode("utf-8"))
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class Allocation:
    """Per-device decision vectors.

    Parameters
    ----------
    bits : ndarray of int, shape (N,)
        Quantization bit width b_n of the uplink activations.
    bandwidth_hz : ndarray, shape (N,)
        Uplink bandwidth B_n in Hz.
    power_w : ndarray, shape (N,)
        Transmit power p_n in W.
    ids : tuple, optional
        Device ids, in scenario order; checked against the scenario when given.
    blocks : tuple of ndarray of int, optional
        Resource-block scenarios only (``docs/formulation.md`` §10): device n's block indices,
        one array of shape (k_n,) per device.
    block_power_w : tuple of ndarray, optional
        With ``blocks``: device n's transmit power on each of its blocks in W, shape (k_n,).
        ``power_w`` is their sum and ``bandwidth_hz`` is ``k_n`` times the block width.
    scenario_sha256 : str, optional
        :func:`scenario_sha256` of the scenario the allocation was solved for; written to and
        read from the JSON file so that using it with another scenario can be flagged.
    """

    bits: NDArray[np.int64]
    bandwidth_hz: NDArray[np.float64]
    power_w: NDArray[np.float64]
    ids: tuple[Any, ...] | None = None
    blocks: tuple[NDArray[np.int64], ...] | None = None
    block_power_w: tuple[NDArray[np.float64], ...] | None = None
    scenario_sha256: str | None = None

    def __post_init__(self) -> None:
        bits = np.asarray(self.bits)
        bw = np.asarray(self.bandwidth_hz, dtype=np.float64)
        pw = np.asarray(self.power_w, dtype=np.float64)
        if bits.ndim != 1 or bw.shape != bits.shape or pw.shape != bits.shape:
            raise AllocationError(
                f"bits, bandwidth_hz and power_w must be 1-D of equal length, got shapes "
                f"{bits.shape}, {bw.shape}, {pw.shape}"
            )
        if bits.size and not np.all(np.isfinite(bits.astype(np.float64))):
            raise AllocationError("bits: must be finite whole numbers")
        if bits.size and not np.array_equal(bits, np.round(bits)):
            raise AllocationError("bits: must be whole numbers")
        for name, arr in (("bandwidth_hz", bw), ("power_w", pw)):
            if not np.all(np.isfinite(arr)):
                raise AllocationError(f"{name}: must be finite numbers")
        if self.ids is not None and len(self.ids) != bits.size:
            raise AllocationError(f"ids: {len(self.ids)} ids for {bits.size} devices")
        object.__setattr__(self, "bits", bits.astype(np.int64))
        object.__setattr__(self, "bandwidth_hz", bw)
        object.__setattr__(self, "power_w", pw)
        if self.ids is not None:
            object.__setattr__(self, "ids", tuple(self.ids))
        if self.blocks is not None or self.block_power_w is not None:
            blocks, powers = check_block_lists(self.blocks, self.block_power_w, bits.size)
            object.__setattr__(self, "blocks", blocks)
            object.__setattr__(self, "block_power_w", powers)

    def __len__(self) -> int:
        return int(self.bits.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Allocation):
            return NotImplemented
        return (
            np.array_equal(self.bits, other.bits)
            and np.array_equal(self.bandwidth_hz, other.bandwidth_hz)
            and np.array_equal(self.power_w, other.power_w)
            and self.ids == other.ids
            and _same_lists(self.blocks, other.blocks)
            and _same_lists(self.block_power_w, other.block_power_w)
        )

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ JSON
    def device_columns(
        self, ids: Sequence[Any] | None = None, **columns: NDArray[Any]
    ) -> ColumnRows:
        """:meth:`device_rows` held column-wise (no dict per device); flat allocations only.

        Raises
        ------
        AllocationError
            With resource blocks, whose rows hold lists (use :meth:`device_rows`).
        """
        if self.blocks is not None:
            raise AllocationError("device_columns: resource-block rows hold lists; use device_rows")
        if ids is None:
            ids = self.ids if self.ids is not None else tuple(range(len(self)))
        names = ("id", "bits", "bandwidth_hz", "power_w", *columns)
        values = (ids, self.bits, self.bandwidth_hz, self.power_w, *columns.values())
        return ColumnRows(names, tuple(np.asarray(v) if k else v for k, v in enumerate(values)))

    def device_rows(
        self, ids: Sequence[Any] | None = None, **columns: NDArray[Any]
    ) -> list[dict[str, Any]]:
        """One plain-data row per device: id, bits, bandwidth_hz, power_w, then ``columns``.

        Parameters
        ----------
        ids : sequence, optional
            Ids to write; the allocation's own (or ``0 .. N-1``) when omitted.
        **columns : ndarray, shape (N,)
            Extra per-device values, in the order given (``sflam-opt solve --json`` adds the
            rate, upload time, latency and energy).

        Returns
        -------
        list of dict
            With resource blocks, each row ends with ``blocks`` and ``block_power_w``.
        """
        blocks, powers = self.blocks, self.block_power_w
        flat = dataclasses.replace(self, blocks=None, block_power_w=None) if blocks else self
        rows = flat.device_columns(ids, **columns).rows()
        if blocks is not None and powers is not None:
            for row, blk, pw in zip(rows, blocks, powers, strict=True):
                row.update(blocks=blk.tolist(), block_power_w=pw.tolist())
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``{"devices": [{"id", "bits", "bandwidth_hz", "power_w"}, ...]}``."""
        head = {} if self.scenario_sha256 is None else {"scenario_sha256": self.scenario_sha256}
        return {**head, "devices": self.device_rows()}

    def matches(self, scenario: Scenario) -> bool | None:
        """Whether the allocation was solved for ``scenario`` (None when the file has no hash)."""
        if self.scenario_sha256 is None:
            return None
        return self.scenario_sha256 == scenario_sha256(scenario)

    def to_json(self) -> str:
        """JSON text; floats are written with full precision so the round trip is exact."""
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = "<allocation>") -> Allocation:
        """Build from :meth:`to_dict` output (also accepts a ``sflam-opt solve --json`` object)."""
        from sflam_opt.allocation_json import from_document

        return from_document(data, source)

    @classmethod
    def from_json(cls, text: str, source: str = "<allocation>") -> Allocation:
        """Parse JSON text written by :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AllocationError(
                f"{source}: invalid JSON at line {exc.lineno}: {exc.msg}"
            ) from None
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Allocation:
        """Read an allocation file: JSON, or the columnar ``.npz`` of ``solve --out FILE.npz``.

        The kind is told from the content, not the name. JSON is read a chunk of rows at a time,
        so memory stays bounded by the result for any number of devices.

        Raises
        ------
        AllocationError
            One line naming the file and, for a bad value, the row (``devices[k]``, or
            ``bits[k]`` in a ``.npz``) and the field; also for a truncated file.
        """
        p = Path(path)
        try:
            with open(p, "rb") as fh:
                magic = fh.read(4)
            if magic == b"PK\x03\x04":
                from sflam_opt.allocation_npz import load_npz

                return load_npz(p)
            from sflam_opt.allocation_json import load_json

            with open(p, encoding="utf-8") as text:
                return load_json(text, str(p))
        except FileNotFoundError:
            raise AllocationError(
                f"{p}: no such allocation file (write one with "
                "`sflam-opt solve SCENARIO --out FILE`)"
            ) from None
        except IsADirectoryError:
            raise AllocationError(f"{p}: is a directory; give an allocation file") from None
        except OSError as exc:
            raise AllocationError(f"{p}: cannot read allocation file: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise AllocationError(f"{p}: not a UTF-8 text file; an allocation is JSON") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically: as ``.npz`` columns when the name ends in ``.npz``, else as JSON."""
        if str(path).endswith(".npz"):
            from sflam_opt.allocation_npz import write_npz

            return write_npz(path, self.device_columns(), self.npz_document())
        return atomic_write_text(path, self.to_json())

    def npz_document(self) -> dict[str, Any]:
        """The non-column part of the allocation (its fingerprint) for :meth:`save` as ``.npz``."""
        if self.blocks is not None:
            raise AllocationError(
                "resource-block allocations are written as JSON only; give a .json file name"
            )
        return {} if self.scenario_sha256 is None else {"scenario_sha256": self.scenario_sha256}


def check_block_lists(
    blocks: Any, powers: Any, n: int
) -> tuple[tuple[NDArray[np.int64], ...], tuple[NDArray[np.float64], ...]]:
    """Validate per-device block indices and block powers; one array per device each.

    Raises
    ------
    AllocationError
        When only one is given, the counts differ from ``n`` devices, a device's two lists differ
        in length, an index is not a whole number >= 0 or a power is not finite.
    """
    if blocks is None or powers is None:
        raise AllocationError("blocks and block_power_w: give both or neither")
    if len(blocks) != n or len(powers) != n:
        raise AllocationError(
            f"blocks and block_power_w: need one list per device ({n}), got "
            f"{len(blocks)} and {len(powers)}"
        )
    out_b: list[NDArray[np.int64]] = []
    out_p: list[NDArray[np.float64]] = []
    for k, (b, p) in enumerate(zip(blocks, powers, strict=True)):
        where = f"devices[{k}]"
        if not isinstance(b, list | tuple | np.ndarray) or not isinstance(
            p, list | tuple | np.ndarray
        ):
            raise AllocationError(f"{where}: blocks and block_power_w must be lists")
        if any(isinstance(v, bool) for v in list(b) + list(p)):
            raise AllocationError(f"{where}: blocks and block_power_w must hold numbers")
        try:
            bi = np.asarray(b, dtype=np.float64).reshape(-1)
            pi = np.asarray(p, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise AllocationError(f"{where}: blocks and block_power_w must hold numbers") from None
        if bi.size != pi.size:
            raise AllocationError(
                f"{where}: {bi.size} blocks but {pi.size} block_power_w entries; need one each"
            )
        if not np.all(np.isfinite(bi)) or not np.array_equal(bi, np.round(bi)) or np.any(bi < 0):
            raise AllocationError(f"{where}.blocks: need whole block indices >= 0")
        if not np.all(np.isfinite(pi)):
            raise AllocationError(f"{where}.block_power_w: must be finite numbers")
        out_b.append(bi.astype(np.int64))
        out_p.append(pi)
    return tuple(out_b), tuple(out_p)


def _same_lists(a: tuple[NDArray[Any], ...] | None, b: tuple[NDArray[Any], ...] | None) -> bool:
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
