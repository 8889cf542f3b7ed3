"""Least-squares polynomial corrections, ``reference ≈ c0 + c1·value + … + cd·value^d``:
pure arithmetic, no I/O.

The fit is solved on the values centred and scaled to [-1, 1] (a cubic in values near 1000
is otherwise a matrix whose columns differ by 10⁹), by QR rather than the normal equations
(which square the condition number), and the coefficients and their covariance are then
carried back to powers of the value itself, the form a profile's correction evaluates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[np.float64]

MAX_DEGREE = 3
#: Beyond this condition number of the scaled design matrix, the references' noise reaches
#: the coefficients amplified a millionfold: the values nearly coincide for this degree
#: (two clusters of points for a quadratic), and more points at other values are needed.
MAX_CONDITION = 1e6


class FitRefused(ValueError):
    """Points that cannot determine the fit; ``field`` names what to change."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Fit:
    degree: int
    #: c0, c1, … of the correction, in powers of the value.
    coefficients: list[float]
    #: Standard errors of the coefficients (from their covariance); None without degrees of
    #: freedom left (as many points as coefficients: the fit is exact, its scatter unknown).
    standard_errors: list[float] | None
    covariance: list[list[float]] | None
    #: The corrected values, and corrected - reference, point by point.
    corrected: list[float]
    residuals: list[float]
    rms_error: float
    max_error: float
    #: The standard uncertainty of a corrected value: the residuals' standard deviation,
    #: sqrt(Σ residual² / (n - degree - 1)); None without degrees of freedom left.
    standard_uncertainty: float | None
    degrees_of_freedom: int
    condition_number: float


def fit_polynomial(values: Sequence[float], references: Sequence[float], degree: int) -> Fit:
    """Fit ``references`` as a polynomial of ``values``; :class:`FitRefused` when the points
    cannot determine it."""
    import numpy as np  # at the first fit, not when the app is built (RSS)

    x = np.asarray(values, dtype=np.float64)
    y = np.asarray(references, dtype=np.float64)
    n, p = x.size, degree + 1
    distinct = int(np.unique(x).size)
    if distinct < p:
        raise FitRefused(
            "points",
            f"a degree {degree} fit needs at least {p} points with different values; "
            f"{n} given, {distinct} different",
        )
    centre = float(x.max() + x.min()) / 2.0
    half = float(x.max() - x.min()) / 2.0 or 1.0
    design = np.vander((x - centre) / half, p, increasing=True)
    condition = float(np.linalg.cond(design))
    if not math.isfinite(condition) or condition > MAX_CONDITION:
        raise FitRefused(
            "points",
            f"the fit is ill-conditioned (condition number {condition:.3g} > "
            f"{MAX_CONDITION:g}): the values nearly coincide for a degree {degree} fit; "
            "add points at other values or lower the degree",
        )
    q, r = np.linalg.qr(design)
    scaled = np.linalg.solve(r, q.T @ y)
    to_powers = _power_basis(centre, half, p)
    coefficients = to_powers @ scaled
    fitted = design @ scaled
    residuals = fitted - y
    dof = n - p
    ssr = float(residuals @ residuals)
    uncertainty = math.sqrt(ssr / dof) if dof > 0 else None
    covariance = standard_errors = None
    if uncertainty is not None:
        r_inv = np.linalg.inv(r)
        cov = to_powers @ (uncertainty**2 * (r_inv @ r_inv.T)) @ to_powers.T
        covariance = cov.tolist()
        standard_errors = np.sqrt(np.clip(np.diag(cov), 0.0, None)).tolist()
    return Fit(
        degree=degree,
        coefficients=coefficients.tolist(),
        standard_errors=standard_errors,
        covariance=covariance,
        corrected=fitted.tolist(),
        residuals=residuals.tolist(),
        rms_error=math.sqrt(ssr / n),
        max_error=float(np.abs(residuals).max()),
        standard_uncertainty=uncertainty,
        degrees_of_freedom=dof,
        condition_number=condition,
    )


def _power_basis(centre: float, half: float, p: int) -> Array:
    """T with c = T·b: ``Σ b_k ((x - centre)/half)^k`` as ``Σ c_j x^j`` (binomial theorem)."""
    import numpy as np

    t = np.zeros((p, p))
    for k in range(p):
        for j in range(k + 1):
            t[j, k] = math.comb(k, j) * (-centre) ** (k - j) / half**k
    return t


def compose(outer: Sequence[float], inner: Sequence[float]) -> list[float]:
    """The coefficients of ``outer(inner(v))``: a new correction on top of an existing one."""
    import numpy as np

    poly = np.polynomial.Polynomial
    return [float(c) for c in poly(list(outer))(poly(list(inner))).coef]
