"""Discrete resource blocks: per-block gains, water-filling, block rates and assignments.

The model is ``docs/formulation.md`` §10. The band is ``M`` blocks of ``W`` Hz; device ``n`` sees
the linear gain ``g_nm`` on block ``m``. Each block goes to at most one device, and a device
splits its power over its blocks, so its rate is ``sum_m W log2(1 + p_nm g_nm / (N0 W))``.

Everything is in terms of the block noise levels ``a_nm = N0 W / g_nm`` (W): the power that
gives SNR 1 on that block. For a fixed set of blocks, the least total power that reaches a rate
``r`` is water-filling, ``p_m = (L - a_m)^+``, and the most rate that a power budget ``P`` buys
is water-filling too; both have closed forms once the active blocks (the ``k`` lowest levels) are
known, and the active count is the largest ``k`` whose level lies above the ``k``-th noise level.
The functions work on padded ``(..., K)`` arrays of levels (``inf`` pads unused slots), so they
are vectorized over devices, candidate moves and assignments alike.

An assignment is an ``owner`` vector of shape (M,): the device index of each block, or -1 for a
block nobody uses.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sflam_opt.allocation import Allocation
from sflam_opt.errors import AllocationError, ScenarioError
from sflam_opt.numeric import LN2, FloatArray, IntArray
from sflam_opt.scenario import Devices, ResourceBlocks, Scenario
from sflam_opt.validation import check_int

__all__ = [
    "BlockFill",
    "block_allocation",
    "block_gain",
    "block_levels",
    "block_rate_bps",
    "block_violations",
    "equal_block_allocation",
    "greedy_assignment",
    "has_blocks",
    "max_rate_bps",
    "padded_levels",
    "round_robin_assignment",
    "waterfill",
    "with_resource_blocks",
]


def has_blocks(scenario: Scenario) -> bool:
    """True when the scenario's band is discrete resource blocks (docs/formulation.md §10)."""
    return scenario.resource_blocks is not None


def _spec(scenario: Scenario) -> ResourceBlocks:
    if scenario.resource_blocks is None or scenario.devices.block_gain_db is None:
        raise ScenarioError(
            "this needs a scenario with resource blocks ([system] resource_blocks and block_hz, "
            "per-device block_gain_db; `sflam-opt scenario new --blocks M`)"
        )
    return scenario.resource_blocks


def block_gain(scenario: Scenario) -> FloatArray:
    """Linear per-block gains ``g_nm = 10^(block_gain_db / 10)``, shape (N, M)."""
    _spec(scenario)
    assert scenario.devices.block_gain_db is not None
    return np.power(10.0, scenario.devices.block_gain_db / 10.0)


def block_levels(scenario: Scenario) -> FloatArray:
    """Block noise levels ``a_nm = N0 W / g_nm`` in W (the power for SNR 1), shape (N, M)."""
    spec = _spec(scenario)
    return scenario.noise_w_per_hz * spec.block_hz / block_gain(scenario)


def padded_levels(levels: FloatArray, owner: IntArray, n: int) -> tuple[FloatArray, IntArray]:
    """Each device's block levels in ascending order, padded with ``inf``.

    Parameters
    ----------
    levels : ndarray, shape (N, M)
        Block noise levels ``a_nm`` (W).
    owner : ndarray of int, shape (M,)
        Device of each block, -1 for unused blocks.
    n : int
        Number of devices N.

    Returns
    -------
    padded : ndarray, shape (N, K)
        Row n holds the levels of device n's blocks, ascending, then ``inf``; K is the largest
        number of blocks a device holds (at least 1).
    index : ndarray of int, shape (N, K)
        The block index of each entry, -1 in the padding.
    """
    used = np.flatnonzero(owner >= 0)
    dev = owner[used]
    lv = levels[dev, used]
    order = np.lexsort((lv, dev))
    dev, blk, lv = dev[order], used[order], lv[order]
    counts = np.bincount(dev, minlength=n)
    k = max(int(counts.max(initial=0)), 1)
    start = np.concatenate(([0], np.cumsum(counts)[:-1]))
    slot = np.arange(dev.size) - start[dev]
    padded = np.full((n, k), np.inf)
    index = np.full((n, k), -1, dtype=np.int64)
    padded[dev, slot] = lv
    index[dev, slot] = blk
    return padded, index


@dataclasses.dataclass(frozen=True)
class BlockFill:
    """A water-filling solution for a batch of block sets; leading shape ``S``.

    Attributes
    ----------
    power_w : ndarray, shape S
        Total power ``sum_m p_m`` (W); ``inf`` where no block is available.
    level_w : ndarray, shape S
        Water level ``L`` (W): ``p_m = max(L - a_m, 0)``.
    active : ndarray of int, shape S
        Number of blocks with positive power.
    floor_w : ndarray, shape S
        The lowest level ``a_0`` (W).
    excess_w : ndarray, shape S
        ``L - a_0`` (W), computed without forming ``L``: on a deep fade the levels reach
        1e11 W while the powers are below 100 W, and ``L - a_m`` would keep only a few digits.
    """

    power_w: FloatArray
    level_w: FloatArray
    active: IntArray
    floor_w: FloatArray
    excess_w: FloatArray

    def block_power(self, levels: FloatArray) -> FloatArray:
        """Per-block powers ``max(L - a_m, 0)`` for the (sorted or not) levels, shape S + (K,).

        ``levels`` are the ones filled; ``L - a_m`` is taken as ``(L - a_0) - (a_m - a_0)``,
        exact in the second term for every active block (``a_m - a_0 < L - a_0 <= power``).
        """
        with np.errstate(invalid="ignore"):
            p = self.excess_w[..., None] - (levels - self.floor_w[..., None])
        return np.where(np.isfinite(levels) & (p > 0), p, 0.0)


def _active_count(valid: np.ndarray) -> IntArray:
    # Validity is a prefix property over the ascending levels; count it.
    return np.maximum(valid.sum(axis=-1), 1).astype(np.int64)


def waterfill(levels: FloatArray, rate_bps: FloatArray | float, block_hz: float) -> BlockFill:
    """Least total power that reaches ``rate_bps`` over a set of blocks (water-filling).

    Minimizes ``sum_m p_m`` subject to ``sum_m W log2(1 + p_m / a_m) >= r``, ``p_m >= 0``. With
    the ``k`` lowest levels active, ``ln L = (r ln2 / W + sum_{i<k} ln a_i) / k``; ``k`` is the
    largest count whose level lies above the ``k``-th lowest ``a``.

    Parameters
    ----------
    levels : ndarray, shape S + (K,)
        Block noise levels ``a_m`` (W), any order, ``inf`` for absent blocks.
    rate_bps : float or ndarray, shape S
        Rate to reach (bit/s), >= 0.
    block_hz : float
        Block width W (Hz).

    Returns
    -------
    BlockFill
        Total power, water level and active count, each of shape S.
    """
    a, a0, finite, diff = _sorted_levels(levels)
    r = np.asarray(rate_bps, dtype=np.float64)
    k = np.arange(1, a.shape[-1] + 1, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # ln(a_i / a_0) = log1p((a_i - a_0) / a_0) and ln(L / a_0) instead of ln a_i and ln L:
        # the latter are near 25 on a deep fade, where their difference keeps only the digits
        # that set the power.
        rel = np.log1p(diff / a0[..., None])
        log_excess = (r[..., None] * LN2 / block_hz + np.cumsum(rel, axis=-1)) / k
        kk = _active_count(finite & (rel < log_excess))
        d = np.take_along_axis(log_excess, (kk - 1)[..., None], axis=-1)[..., 0]
        excess = np.where(r > 0, a0 * np.expm1(d), 0.0)
        below = np.take_along_axis(np.cumsum(diff, axis=-1), (kk - 1)[..., None], axis=-1)[..., 0]
        power = np.where(r > 0, kk * excess - below, 0.0)
        level = a0 + excess
    none = ~finite[..., 0]
    power = np.where(none, np.inf, np.maximum(power, 0.0))
    return BlockFill(power, level, kk, a0, excess)


def _sorted_levels(levels: FloatArray) -> tuple[FloatArray, FloatArray, np.ndarray, FloatArray]:
    """Ascending levels, the lowest ``a_0`` (shape S), finiteness and ``a_m - a_0`` (0 if absent)."""
    a = np.sort(levels, axis=-1)
    finite = np.isfinite(a)
    a0 = a[..., 0]
    with np.errstate(invalid="ignore"):
        diff = np.where(finite, a - a0[..., None], 0.0)
    return a, a0, finite, diff


def max_rate_bps(levels: FloatArray, power_w: FloatArray | float, block_hz: float) -> FloatArray:
    """Largest rate a power budget buys over a set of blocks (water-filling), bit/s.

    With the ``k`` lowest levels active, ``L = (P + sum_{i<k} a_i) / k`` and the rate is
    ``W sum_{i<k} log2(L / a_i)``.

    Parameters
    ----------
    levels : ndarray, shape S + (K,)
        Block noise levels (W), any order, ``inf`` for absent blocks.
    power_w : float or ndarray, shape S
        Power budget (W), >= 0.
    block_hz : float
        Block width W (Hz).

    Returns
    -------
    ndarray, shape S
        The rate (0 where there is no block).
    """
    a, a0, finite, diff = _sorted_levels(levels)
    p = np.asarray(power_w, dtype=np.float64)
    k = np.arange(1, a.shape[-1] + 1, dtype=np.float64)
    # L - a_0 = (P + sum_{i<k} (a_i - a_0)) / k, and ln(L / a_i) = log1p((L - a_i) / a_i): exact
    # digits where the levels dwarf the power (a deep fade), unlike ln(L) - ln(a_i).
    excess = (p[..., None] + np.cumsum(diff, axis=-1)) / k
    with np.errstate(invalid="ignore"):
        kk = _active_count(finite & (diff < excess))
    e = np.take_along_axis(excess, (kk - 1)[..., None], axis=-1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(
            finite & (np.arange(a.shape[-1]) < kk[..., None]),
            np.log1p((e[..., None] - diff) / np.where(finite, a, 1.0)),
            0.0,
        )
    rate = block_hz * terms.sum(axis=-1) / LN2
    return np.where(finite[..., 0], rate, 0.0)


def round_robin_assignment(n: int, m: int) -> IntArray:
    """Block ``m`` to device ``m mod N``: the equal baseline's assignment, shape (M,)."""
    return np.arange(m, dtype=np.int64) % n


def greedy_assignment(gain: FloatArray) -> IntArray:
    """Best-gain greedy assignment, shape (M,).

    First every device takes one block: the one-to-one matching of devices to blocks with the
    largest product of gains (:func:`scipy.optimize.linear_sum_assignment` on the dB gains). Then
    every remaining block goes to the device with the highest gain on it.

    Parameters
    ----------
    gain : ndarray, shape (N, M)
        Linear block gains, > 0.
    """
    from scipy.optimize import linear_sum_assignment  # imported on first use: fast never needs it

    n, m = gain.shape
    if m < n:
        raise ScenarioError(f"{m} blocks for {n} devices; every device needs at least one block")
    owner = np.full(m, -1, dtype=np.int64)
    dev, blk = linear_sum_assignment(np.log(gain), maximize=True)
    owner[blk] = dev
    free = owner < 0
    owner[free] = np.argmax(gain[:, free], axis=0)
    return owner


def block_allocation(
    scenario: Scenario, owner: IntArray, bits: IntArray, power: FloatArray
) -> Allocation:
    """An :class:`~sflam_opt.allocation.Allocation` with blocks from an assignment.

    Parameters
    ----------
    owner : ndarray of int, shape (M,)
        Device of each block (-1: unused).
    bits : ndarray of int, shape (N,)
    power : ndarray, shape (M,)
        Power on each block (W); ignored for unused blocks.
    """
    spec = _spec(scenario)
    n = scenario.n_devices
    owner = np.asarray(owner, dtype=np.int64)
    used = np.flatnonzero(owner >= 0)
    order = used[np.argsort(owner[used], kind="stable")]
    counts = np.bincount(owner[used], minlength=n)
    splits = np.cumsum(counts)[:-1]
    power = np.asarray(power, dtype=np.float64)
    blocks = tuple(np.split(order, splits))
    powers = tuple(np.split(power[order], splits))
    return Allocation(
        np.asarray(bits, dtype=np.int64),
        counts * spec.block_hz,
        np.bincount(owner[order], weights=power[order], minlength=n),
        scenario.devices.ids,
        blocks,
        powers,
    )


def equal_block_allocation(scenario: Scenario) -> Allocation:
    """The equal baseline of a block scenario: round robin, equal power split, ``max L`` bits."""
    spec = _spec(scenario)
    n = scenario.n_devices
    owner = round_robin_assignment(n, spec.count)
    counts = np.bincount(owner, minlength=n)
    power = scenario.devices.max_power_w[owner] / counts[owner]
    return block_allocation(scenario, owner, np.full(n, scenario.bits.max), power)


def _owner_of(scenario: Scenario, allocation: Allocation) -> tuple[IntArray, FloatArray]:
    """Flattened (device, block) and power arrays of a block allocation."""
    assert allocation.blocks is not None and allocation.block_power_w is not None
    counts = np.fromiter(map(len, allocation.blocks), dtype=np.int64, count=scenario.n_devices)
    dev = np.repeat(np.arange(scenario.n_devices), counts)
    blk = np.concatenate(allocation.blocks) if dev.size else np.zeros(0, dtype=np.int64)
    pw = np.concatenate(allocation.block_power_w) if dev.size else np.zeros(0)
    return np.stack([dev, blk]), pw


def block_rate_bps(scenario: Scenario, allocation: Allocation) -> FloatArray:
    """Rates ``sum_m W log2(1 + p_nm g_nm / (N0 W))`` of a block allocation, bit/s, shape (N,).

    Blocks outside ``0..M-1`` and negative powers add nothing (:func:`block_violations` reports
    them).
    """
    spec = _spec(scenario)
    if allocation.blocks is None:
        raise AllocationError("the scenario has resource blocks; the allocation gives none")
    pairs, pw = _owner_of(scenario, allocation)
    dev, blk = pairs
    ok = (blk >= 0) & (blk < spec.count) & (pw > 0)
    a = block_levels(scenario)[dev[ok], np.minimum(blk[ok], spec.count - 1)]
    terms = spec.block_hz * np.log1p(pw[ok] / a) / LN2
    return np.bincount(dev[ok], weights=terms, minlength=scenario.n_devices)


def block_violations(scenario: Scenario, allocation: Allocation, tol: float) -> list[str]:
    """Block checks of docs/formulation.md §10; messages in the style of ``costs.violations``.

    Each block used at most once and within ``0..M-1``, every device holds at least one block,
    block powers ``>= 0``, ``power_w`` = sum of block powers and ``bandwidth_hz`` = blocks x W
    (relative ``tol``). The power cap itself is checked on ``power_w`` by the caller.
    """
    ids = scenario.devices.ids
    if not has_blocks(scenario):
        if allocation.blocks is not None:
            return ["blocks: the allocation gives resource blocks but the scenario has none"]
        return []
    if allocation.blocks is None or allocation.block_power_w is None:
        return [
            "blocks: the scenario has resource blocks; give each device's blocks and "
            "block_power_w (solve the scenario to get them)"
        ]
    spec = _spec(scenario)
    out: list[str] = []

    def devs(mask: np.ndarray) -> str:
        idx = np.flatnonzero(mask)
        shown = ", ".join(repr(ids[i]) for i in idx[:5])
        return shown + (f" and {idx.size - 5} more" if idx.size > 5 else "")

    pairs, pw = _owner_of(scenario, allocation)
    dev, blk = pairs
    bad = (blk < 0) | (blk >= spec.count)
    if np.any(bad):
        out.append(
            f"blocks: block index outside 0..{spec.count - 1} "
            f"(devices {devs(np.bincount(dev[bad], minlength=len(ids)) > 0)})"
        )
    uses = np.bincount(blk[~bad], minlength=spec.count)
    if np.any(uses > 1):
        twice = np.flatnonzero(uses > 1)
        holders = np.isin(blk, twice) & ~bad
        out.append(
            f"blocks: blocks {twice[:5].tolist()} used by more than one device "
            f"(devices {devs(np.bincount(dev[holders], minlength=len(ids)) > 0)})"
        )
    counts = np.bincount(dev, minlength=len(ids))
    if np.any(counts == 0):
        out.append(f"blocks: every device needs at least one block (devices {devs(counts == 0)})")
    if np.any(pw < 0):
        neg = np.bincount(dev[pw < 0], minlength=len(ids)) > 0
        out.append(f"power: block_power_w must be >= 0 (devices {devs(neg)})")
    sums = np.bincount(dev, weights=pw, minlength=len(ids))
    off = ~np.isclose(allocation.power_w, sums, rtol=tol, atol=0.0)
    if np.any(off):
        out.append(f"power: power_w must equal the sum of block_power_w (devices {devs(off)})")
    off = ~np.isclose(allocation.bandwidth_hz, counts * spec.block_hz, rtol=tol, atol=0.0)
    if np.any(off):
        out.append(
            f"bandwidth: bandwidth_hz must be the number of blocks x block_hz = "
            f"{spec.block_hz:g} Hz (devices {devs(off)})"
        )
    return out


def with_resource_blocks(scenario: Scenario, blocks: int, seed: int = 0) -> Scenario:
    """The scenario with its band cut into ``blocks`` equal blocks and Rayleigh block gains.

    Block ``m`` of device ``n`` gets ``gain_db_n + 10 log10(|h_nm|^2)`` with ``|h_nm|^2`` drawn
    from the unit exponential (Rayleigh fading around the path loss), by
    ``numpy.random.default_rng(seed)``, rounded to 1e-4 dB so that the TOML file stays short.

    Parameters
    ----------
    blocks : int
        Number of blocks M (at least the number of devices).
    seed : int
        Seed of the fading draws.

    Raises
    ------
    ScenarioError
        If ``blocks`` is not a whole number >= N or ``seed`` is not a whole number >= 0.
    """
    n = scenario.n_devices
    m = check_int(
        blocks, "blocks", minimum=n, error=ScenarioError, hint=" (at least one block per device)"
    )
    s = check_int(seed, "seed", minimum=0, error=ScenarioError)
    rng = np.random.default_rng(s)
    fade = rng.exponential(1.0, size=(n, m))
    gains = np.round(scenario.devices.gain_db[:, None] + 10.0 * np.log10(fade), 4)
    devices: Devices = dataclasses.replace(scenario.devices, block_gain_db=gains)
    spec = ResourceBlocks(m, scenario.system.bandwidth_hz / m)
    system = dataclasses.replace(scenario.system, bandwidth_hz=m * spec.block_hz)
    return dataclasses.replace(scenario, system=system, devices=devices, resource_blocks=spec)
