"""Shared numeric type aliases and constants, defined once for the whole package."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

__all__ = ["LN2", "FloatArray", "IntArray"]

FloatArray = NDArray[np.float64]
"""A float64 numpy array (shapes are given where it is used)."""

IntArray = NDArray[np.int64]
"""An int64 numpy array (shapes are given where it is used)."""

LN2: float = math.log(2.0)
"""ln 2: converts between bits and nats in the Shannon rate."""
