"""NIST ITS-90 thermocouple reference functions (NIST Monograph 175, SRD 60).

Types B, E, J, K, N, R, S and T, both directions, with the reference junction at 0 °C:

- :func:`emf_mv` evaluates the reference function E(t) (for type K above 0 °C including its
  exponential term ``a0·exp(a1·(t - a2)²)``);
- :func:`temperature_c` inverts E(t) exactly: the published approximate inverse polynomial
  t(E) (off by up to its published error band, :attr:`InverseRange.error_c`, 0.05 °C for
  type K) gives the first estimate, and Newton's method on E(t) itself refines it until
  E(t) = emf (far below 0.001 °C), over the reference function's whole range;
- :func:`compensated_temperature_c` adds the cold-junction emf before inverting;
- :func:`max31855_corrected_c` undoes the MAX31855's linear approximation.

Nothing here extrapolates: an emf outside E(t)'s range (by more than half the NIST tables'
last digit, :data:`END_TOLERANCE_MV`) raises :class:`ThermocoupleRangeError`, whose message
states the valid range. Type B's emf falls from 0 °C to a minimum near 21 °C before rising:
there an emf has two temperatures, and the inverse gives the one above the minimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

__all__ = [
    "END_TOLERANCE_MV",
    "MAX31855_MV_PER_C",
    "TYPES",
    "ForwardRange",
    "InverseRange",
    "ThermocoupleRangeError",
    "ThermocoupleType",
    "compensated_temperature_c",
    "emf_mv",
    "get_type",
    "max31855_corrected_c",
    "temperature_c",
]

#: The MAX31855K's fixed Seebeck coefficient, 41.276 µV/°C, in mV/°C.
MAX31855_MV_PER_C = 0.041276

#: How far beyond an end of E(t)'s range an emf is still that end's temperature: half the
#: last digit of the NIST tables, which round some end values outward (type K at -270 °C:
#: -6.458 mV in the table, -6.457738 mV from the function).
END_TOLERANCE_MV = 0.0005

#: Newton's method stops once its step leaves an error estimated below this: a margin of
#: 10,000 under the 0.001 °C the inverse promises, for the estimate's own approximation.
_NEWTON_ERROR_C = 1e-7
#: Bisection in a bracket of 2000 °C reaches 1e-7 °C within 35 halvings.
_MAX_STEPS = 64


class ThermocoupleRangeError(ValueError):
    """A temperature or emf outside the published range of the reference functions."""

    def __init__(self, message: str, *, type_name: str, value: float) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.value = value


def _horner(coefficients: tuple[float, ...], x: float) -> float:
    acc = 0.0
    for c in reversed(coefficients):
        acc = acc * x + c
    return acc


def _horner_with_slopes(coefficients: tuple[float, ...], x: float) -> tuple[float, float, float]:
    """The polynomial and its first and second derivatives at ``x``, in one pass."""
    acc = slope = half_curve = 0.0
    for c in reversed(coefficients):
        half_curve = half_curve * x + slope
        slope = slope * x + acc
        acc = acc * x + c
    return acc, slope, 2.0 * half_curve


def _lerp(x: float, x0: float, x1: float, y0: float, y1: float) -> float:
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


@dataclass(frozen=True)
class ForwardRange:
    """One piece of the reference function E(t) = Σ c_i·t^i, valid on [t_min, t_max] °C."""

    t_min: float
    t_max: float
    coefficients: tuple[float, ...]

    def evaluate(self, t_c: float) -> float:
        return _horner(self.coefficients, t_c)

    def evaluate_with_slopes(self, t_c: float) -> tuple[float, float, float]:
        """E(t), dE/dt and d²E/dt² of this piece (mV, mV/°C, mV/°C²)."""
        return _horner_with_slopes(self.coefficients, t_c)


@dataclass(frozen=True)
class InverseRange:
    """One approximate inverse t = Σ d_i·E^i, published for [emf_min, emf_max] mV.

    ``error_c`` is the published band of t_inverse(E(t)) - t over the range, in °C.
    """

    t_min: float
    t_max: float
    emf_min: float
    emf_max: float
    error_c: tuple[float, float]
    coefficients: tuple[float, ...]

    def evaluate(self, emf: float) -> float:
        return _horner(self.coefficients, emf)


@dataclass(frozen=True)
class ThermocoupleType:
    name: str
    forward: tuple[ForwardRange, ...]
    inverse: tuple[InverseRange, ...]
    #: type K only: (a0, a1, a2) of a0·exp(a1·(t - a2)²), added for t ≥ 0 °C
    exponential: tuple[float, float, float] | None = None

    @property
    def t_min(self) -> float:
        return self.forward[0].t_min

    @property
    def t_max(self) -> float:
        return self.forward[-1].t_max

    @cached_property
    def inverse_t_min(self) -> float:
        """The lowest temperature the inverse gives: ``t_min``, except for type B, whose emf
        falls from 0 °C to a minimum near 21 °C (the inverse gives the branch above it)."""
        first = self.forward[0]
        if first.evaluate_with_slopes(first.t_min)[1] >= 0.0:
            return self.t_min
        lo, hi = first.t_min, first.t_max  # the slope rises through zero in this piece
        while hi - lo > 1e-9:
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if first.evaluate_with_slopes(mid)[1] < 0.0 else (lo, mid)
        return hi

    @property
    def inverse_t_max(self) -> float:
        return self.t_max

    @cached_property
    def emf_min(self) -> float:
        """The lowest emf the inverse takes: E(:attr:`inverse_t_min`)."""
        return self.emf_mv(self.inverse_t_min)

    @cached_property
    def emf_max(self) -> float:
        """The highest emf the inverse takes: E(:attr:`t_max`)."""
        return self.emf_mv(self.t_max)

    def forward_range(self, t_c: float) -> ForwardRange:
        """The piece for ``t_c``; at a shared boundary the upper piece (both agree there)."""
        if not (self.t_min <= t_c <= self.t_max):  # also rejects NaN
            raise ThermocoupleRangeError(
                f"type {self.name}: temperature {t_c} °C is outside the reference function's "
                f"range {self.t_min:g} to {self.t_max:g} °C",
                type_name=self.name,
                value=t_c,
            )
        chosen = self.forward[0]
        for r in self.forward:
            if r.t_min <= t_c:
                chosen = r
        return chosen

    def inverse_range(self, emf: float) -> InverseRange:
        """The published inverse piece for ``emf``; below or above the published ranges (where
        E(t)'s range reaches further: type K below -200 °C), the nearest one.

        Where published ranges overlap (types R and S between 1064 and 1200 °C) the later one
        is used: its error band is ten times narrower.
        """
        chosen = self.inverse[0]
        for r in self.inverse:
            if r.emf_min <= emf:
                chosen = r
        return chosen

    def emf_mv(self, t_c: float) -> float:
        emf = self.forward_range(t_c).evaluate(t_c)
        if self.exponential is not None and t_c >= 0.0:
            a0, a1, a2 = self.exponential
            emf += a0 * math.exp(a1 * (t_c - a2) ** 2)
        return emf

    def _emf_with_slopes(self, t_c: float) -> tuple[float, float, float]:
        emf, slope, curve = self.forward_range(t_c).evaluate_with_slopes(t_c)
        if self.exponential is not None and t_c >= 0.0:
            a0, a1, a2 = self.exponential
            u = t_c - a2
            term = a0 * math.exp(a1 * u * u)
            emf += term
            slope += 2.0 * a1 * u * term
            curve += (2.0 * a1 + (2.0 * a1 * u) ** 2) * term
        return emf, slope, curve

    def temperature_c(self, emf: float) -> float:
        """The temperature whose E(t) is ``emf``, to far better than 0.001 °C."""
        lo_emf, hi_emf = self.emf_min, self.emf_max
        if not (lo_emf - END_TOLERANCE_MV <= emf <= hi_emf + END_TOLERANCE_MV):  # NaN too
            raise ThermocoupleRangeError(
                f"type {self.name}: emf {emf} mV is outside the reference function's range "
                f"{lo_emf:.6g} to {hi_emf:.6g} mV "
                f"({self.inverse_t_min:.4g} to {self.inverse_t_max:g} °C)",
                type_name=self.name,
                value=emf,
            )
        if emf <= lo_emf:
            return self.inverse_t_min
        if emf >= hi_emf:
            return self.t_max
        return self._solve(emf, self.inverse_t_min, self.t_max)

    def _estimate(self, emf: float) -> float:
        """The published polynomial's temperature, or across a stretch no polynomial covers
        (type K below -200 °C, type B below 250 °C) the straight line over it."""
        first, last = self.inverse[0], self.inverse[-1]
        if emf < first.emf_min:
            return _lerp(emf, self.emf_min, first.emf_min, self.inverse_t_min, first.t_min)
        if emf > last.emf_max:
            return _lerp(emf, last.emf_max, self.emf_max, last.t_max, self.t_max)
        return self.inverse_range(emf).evaluate(emf)

    def _solve(self, emf: float, lo: float, hi: float) -> float:
        """E(t) = emf for E(lo) < emf < E(hi), E rising on [lo, hi]: Newton's method from the
        estimate, kept inside a bracket that shrinks with each step, bisecting whenever
        Newton would leave it (near type B's minimum, where the slope vanishes)."""
        t = min(max(self._estimate(emf), lo), hi)
        for _ in range(_MAX_STEPS):
            e, slope, curve = self._emf_with_slopes(t)
            if e == emf:
                return t
            if e > emf:
                hi = t
            else:
                lo = t
            step = (e - emf) / slope if slope > 0.0 else math.inf
            nxt = t - step
            if lo < nxt < hi:
                # Newton's error after this step is about |E''/2E'|·step²: from the published
                # polynomial's estimate (within 0.06 °C) one step is nearly always enough.
                if abs(curve / (2.0 * slope)) * step * step < _NEWTON_ERROR_C:
                    return nxt
            else:
                nxt = 0.5 * (lo + hi)
                if hi - lo < _NEWTON_ERROR_C:
                    return nxt
            t = nxt
        return t


def _f(t_min: float, t_max: float, *coefficients: float) -> ForwardRange:
    return ForwardRange(t_min, t_max, coefficients)


def _i(
    t: tuple[float, float], emf: tuple[float, float], err: tuple[float, float], *d: float
) -> InverseRange:
    return InverseRange(t[0], t[1], emf[0], emf[1], err, d)


# Coefficients as published in NIST Monograph 175 / SRD 60 (°C and mV, constant term first).
_B = ThermocoupleType(
    "B",
    forward=(
        _f(
            0.0,
            630.615,
            0.000000000000e00,
            -0.246508183460e-03,
            0.590404211710e-05,
            -0.132579316360e-08,
            0.156682919010e-11,
            -0.169445292400e-14,
            0.629903470940e-18,
        ),
        _f(
            630.615,
            1820.0,
            -0.389381686210e01,
            0.285717474700e-01,
            -0.848851047850e-04,
            0.157852801640e-06,
            -0.168353448640e-09,
            0.111097940130e-12,
            -0.445154310330e-16,
            0.989756408210e-20,
            -0.937913302890e-24,
        ),
    ),
    inverse=(
        _i(
            (250.0, 700.0),
            (0.291, 2.431),
            (-0.02, 0.03),
            9.8423321e01,
            6.9971500e02,
            -8.4765304e02,
            1.0052644e03,
            -8.3345952e02,
            4.5508542e02,
            -1.5523037e02,
            2.9886750e01,
            -2.4742860e00,
        ),
        _i(
            (700.0, 1820.0),
            (2.431, 13.820),
            (-0.01, 0.02),
            2.1315071e02,
            2.8510504e02,
            -5.2742887e01,
            9.9160804e00,
            -1.2965303e00,
            1.1195870e-01,
            -6.0625199e-03,
            1.8661696e-04,
            -2.4878585e-06,
        ),
    ),
)

_E = ThermocoupleType(
    "E",
    forward=(
        _f(
            -270.0,
            0.0,
            0.000000000000e00,
            0.586655087080e-01,
            0.454109771240e-04,
            -0.779980486860e-06,
            -0.258001608430e-07,
            -0.594525830570e-09,
            -0.932140586670e-11,
            -0.102876055340e-12,
            -0.803701236210e-15,
            -0.439794973910e-17,
            -0.164147763550e-19,
            -0.396736195160e-22,
            -0.558273287210e-25,
            -0.346578420130e-28,
        ),
        _f(
            0.0,
            1000.0,
            0.000000000000e00,
            0.586655087100e-01,
            0.450322755820e-04,
            0.289084072120e-07,
            -0.330568966520e-09,
            0.650244032700e-12,
            -0.191974955040e-15,
            -0.125366004970e-17,
            0.214892175690e-20,
            -0.143880417820e-23,
            0.359608994810e-27,
        ),
    ),
    inverse=(
        _i(
            (-200.0, 0.0),
            (-8.825, 0.0),
            (-0.01, 0.03),
            0.0000000e00,
            1.6977288e01,
            -4.3514970e-01,
            -1.5859697e-01,
            -9.2502871e-02,
            -2.6084314e-02,
            -4.1360199e-03,
            -3.4034030e-04,
            -1.1564890e-05,
        ),
        _i(
            (0.0, 1000.0),
            (0.0, 76.373),
            (-0.02, 0.02),
            0.0000000e00,
            1.7057035e01,
            -2.3301759e-01,
            6.5435585e-03,
            -7.3562749e-05,
            -1.7896001e-06,
            8.4036165e-08,
            -1.3735879e-09,
            1.0629823e-11,
            -3.2447087e-14,
        ),
    ),
)

_J = ThermocoupleType(
    "J",
    forward=(
        _f(
            -210.0,
            760.0,
            0.000000000000e00,
            0.503811878150e-01,
            0.304758369300e-04,
            -0.856810657200e-07,
            0.132281952950e-09,
            -0.170529583370e-12,
            0.209480906970e-15,
            -0.125383953360e-18,
            0.156317256970e-22,
        ),
        _f(
            760.0,
            1200.0,
            0.296456256810e03,
            -0.149761277860e01,
            0.317871039240e-02,
            -0.318476867010e-05,
            0.157208190040e-08,
            -0.306913690560e-12,
        ),
    ),
    inverse=(
        _i(
            (-210.0, 0.0),
            (-8.095, 0.0),
            (-0.05, 0.03),
            0.0000000e00,
            1.9528268e01,
            -1.2286185e00,
            -1.0752178e00,
            -5.9086933e-01,
            -1.7256713e-01,
            -2.8131513e-02,
            -2.3963370e-03,
            -8.3823321e-05,
        ),
        _i(
            (0.0, 760.0),
            (0.0, 42.919),
            (-0.04, 0.04),
            0.000000e00,
            1.978425e01,
            -2.001204e-01,
            1.036969e-02,
            -2.549687e-04,
            3.585153e-06,
            -5.344285e-08,
            5.099890e-10,
        ),
        _i(
            (760.0, 1200.0),
            (42.919, 69.553),
            (-0.04, 0.03),
            -3.11358187e03,
            3.00543684e02,
            -9.94773230e00,
            1.70276630e-01,
            -1.43033468e-03,
            4.73886084e-06,
        ),
    ),
)

_K = ThermocoupleType(
    "K",
    forward=(
        _f(
            -270.0,
            0.0,
            0.000000000000e00,
            0.394501280250e-01,
            0.236223735980e-04,
            -0.328589067840e-06,
            -0.499048287770e-08,
            -0.675090591730e-10,
            -0.574103274280e-12,
            -0.310888728940e-14,
            -0.104516093650e-16,
            -0.198892668780e-19,
            -0.163226974860e-22,
        ),
        _f(
            0.0,
            1372.0,
            -0.176004136860e-01,
            0.389212049750e-01,
            0.185587700320e-04,
            -0.994575928740e-07,
            0.318409457190e-09,
            -0.560728448890e-12,
            0.560750590590e-15,
            -0.320207200030e-18,
            0.971511471520e-22,
            -0.121047212750e-25,
        ),
    ),
    inverse=(
        _i(
            (-200.0, 0.0),
            (-5.891, 0.0),
            (-0.02, 0.04),
            0.0000000e00,
            2.5173462e01,
            -1.1662878e00,
            -1.0833638e00,
            -8.9773540e-01,
            -3.7342377e-01,
            -8.6632643e-02,
            -1.0450598e-02,
            -5.1920577e-04,
        ),
        _i(
            (0.0, 500.0),
            (0.0, 20.644),
            (-0.05, 0.04),
            0.000000e00,
            2.508355e01,
            7.860106e-02,
            -2.503131e-01,
            8.315270e-02,
            -1.228034e-02,
            9.804036e-04,
            -4.413030e-05,
            1.057734e-06,
            -1.052755e-08,
        ),
        _i(
            (500.0, 1372.0),
            (20.644, 54.886),
            (-0.05, 0.06),
            -1.318058e02,
            4.830222e01,
            -1.646031e00,
            5.464731e-02,
            -9.650715e-04,
            8.802193e-06,
            -3.110810e-08,
        ),
    ),
    exponential=(0.118597600000e00, -0.118343200000e-03, 0.126968600000e03),
)

_N = ThermocoupleType(
    "N",
    forward=(
        _f(
            -270.0,
            0.0,
            0.000000000000e00,
            0.261591059620e-01,
            0.109574842280e-04,
            -0.938411115540e-07,
            -0.464120397590e-10,
            -0.263033577160e-11,
            -0.226534380030e-13,
            -0.760893007910e-16,
            -0.934196678350e-19,
        ),
        _f(
            0.0,
            1300.0,
            0.000000000000e00,
            0.259293946010e-01,
            0.157101418800e-04,
            0.438256272370e-07,
            -0.252611697940e-09,
            0.643118193390e-12,
            -0.100634715190e-14,
            0.997453389920e-18,
            -0.608632456070e-21,
            0.208492293390e-24,
            -0.306821961510e-28,
        ),
    ),
    inverse=(
        _i(
            (-200.0, 0.0),
            (-3.990, 0.0),
            (-0.02, 0.03),
            0.0000000e00,
            3.8436847e01,
            1.1010485e00,
            5.2229312e00,
            7.2060525e00,
            5.8488586e00,
            2.7754916e00,
            7.7075166e-01,
            1.1582665e-01,
            7.3138868e-03,
        ),
        _i(
            (0.0, 600.0),
            (0.0, 20.613),
            (-0.02, 0.03),
            0.00000e00,
            3.86896e01,
            -1.08267e00,
            4.70205e-02,
            -2.12169e-06,
            -1.17272e-04,
            5.39280e-06,
            -7.98156e-08,
        ),
        _i(
            (600.0, 1300.0),
            (20.613, 47.513),
            (-0.04, 0.02),
            1.972485e01,
            3.300943e01,
            -3.915159e-01,
            9.855391e-03,
            -1.274371e-04,
            7.767022e-07,
        ),
    ),
)

_R = ThermocoupleType(
    "R",
    forward=(
        _f(
            -50.0,
            1064.180,
            0.000000000000e00,
            0.528961729765e-02,
            0.139166589782e-04,
            -0.238855693017e-07,
            0.356916001063e-10,
            -0.462347666298e-13,
            0.500777441034e-16,
            -0.373105886191e-19,
            0.157716482367e-22,
            -0.281038625251e-26,
        ),
        _f(
            1064.180,
            1664.500,
            0.295157925316e01,
            -0.252061251332e-02,
            0.159564501865e-04,
            -0.764085947576e-08,
            0.205305291024e-11,
            -0.293359668173e-15,
        ),
        _f(
            1664.500,
            1768.100,
            0.152232118209e03,
            -0.268819888545e00,
            0.171280280471e-03,
            -0.345895706453e-07,
            -0.934633971046e-14,
        ),
    ),
    inverse=(
        _i(
            (-50.0, 250.0),
            (-0.226, 1.923),
            (-0.02, 0.02),
            0.0000000e00,
            1.8891380e02,
            -9.3835290e01,
            1.3068619e02,
            -2.2703580e02,
            3.5145659e02,
            -3.8953900e02,
            2.8239471e02,
            -1.2607281e02,
            3.1353611e01,
            -3.3187769e00,
        ),
        _i(
            (250.0, 1200.0),
            (1.923, 13.228),
            (-0.005, 0.005),
            1.334584505e01,
            1.472644573e02,
            -1.844024844e01,
            4.031129726e00,
            -6.249428360e-01,
            6.468412046e-02,
            -4.458750426e-03,
            1.994710149e-04,
            -5.313401790e-06,
            6.481976217e-08,
        ),
        _i(
            (1064.0, 1664.5),
            (11.361, 19.739),
            (-0.0005, 0.001),
            -8.199599416e01,
            1.553962042e02,
            -8.342197663e00,
            4.279433549e-01,
            -1.191577910e-02,
            1.492290091e-04,
        ),
        _i(
            (1664.5, 1768.1),
            (19.739, 21.103),
            (-0.001, 0.002),
            3.406177836e04,
            -7.023729171e03,
            5.582903813e02,
            -1.952394635e01,
            2.560740231e-01,
        ),
    ),
)

_S = ThermocoupleType(
    "S",
    forward=(
        _f(
            -50.0,
            1064.180,
            0.000000000000e00,
            0.540313308631e-02,
            0.125934289740e-04,
            -0.232477968689e-07,
            0.322028823036e-10,
            -0.331465196389e-13,
            0.255744251786e-16,
            -0.125068871393e-19,
            0.271443176145e-23,
        ),
        _f(
            1064.180,
            1664.500,
            0.132900444085e01,
            0.334509311344e-02,
            0.654805192818e-05,
            -0.164856259209e-08,
            0.129989605174e-13,
        ),
        _f(
            1664.500,
            1768.100,
            0.146628232636e03,
            -0.258430516752e00,
            0.163693574641e-03,
            -0.330439046987e-07,
            -0.943223690612e-14,
        ),
    ),
    inverse=(
        _i(
            (-50.0, 250.0),
            (-0.235, 1.874),
            (-0.02, 0.02),
            0.00000000e00,
            1.84949460e02,
            -8.00504062e01,
            1.02237430e02,
            -1.52248592e02,
            1.88821343e02,
            -1.59085941e02,
            8.23027880e01,
            -2.34181944e01,
            2.79786260e00,
        ),
        _i(
            (250.0, 1200.0),
            (1.874, 11.950),
            (-0.01, 0.01),
            1.291507177e01,
            1.466298863e02,
            -1.534713402e01,
            3.145945973e00,
            -4.163257839e-01,
            3.187963771e-02,
            -1.291637500e-03,
            2.183475087e-05,
            -1.447379511e-07,
            8.211272125e-09,
        ),
        _i(
            (1064.0, 1664.5),
            (10.332, 17.536),
            (-0.0002, 0.0002),
            -8.087801117e01,
            1.621573104e02,
            -8.536869453e00,
            4.719686976e-01,
            -1.441693666e-02,
            2.081618890e-04,
        ),
        _i(
            (1664.5, 1768.1),
            (17.536, 18.693),
            (-0.002, 0.002),
            5.333875126e04,
            -1.235892298e04,
            1.092657613e03,
            -4.265693686e01,
            6.247205420e-01,
        ),
    ),
)

_T = ThermocoupleType(
    "T",
    forward=(
        _f(
            -270.0,
            0.0,
            0.000000000000e00,
            0.387481063640e-01,
            0.441944343470e-04,
            0.118443231050e-06,
            0.200329735540e-07,
            0.901380195590e-09,
            0.226511565930e-10,
            0.360711542050e-12,
            0.384939398830e-14,
            0.282135219250e-16,
            0.142515947790e-18,
            0.487686622860e-21,
            0.107955392700e-23,
            0.139450270620e-26,
            0.797951539270e-30,
        ),
        _f(
            0.0,
            400.0,
            0.000000000000e00,
            0.387481063640e-01,
            0.332922278800e-04,
            0.206182434040e-06,
            -0.218822568460e-08,
            0.109968809280e-10,
            -0.308157587720e-13,
            0.454791352900e-16,
            -0.275129016730e-19,
        ),
    ),
    inverse=(
        _i(
            (-200.0, 0.0),
            (-5.603, 0.0),
            (-0.02, 0.04),
            0.0000000e00,
            2.5949192e01,
            -2.1316967e-01,
            7.9018692e-01,
            4.2527777e-01,
            1.3304473e-01,
            2.0241446e-02,
            1.2668171e-03,
        ),
        _i(
            (0.0, 400.0),
            (0.0, 20.872),
            (-0.03, 0.03),
            0.000000e00,
            2.592800e01,
            -7.602961e-01,
            4.637791e-02,
            -2.165394e-03,
            6.048144e-05,
            -7.293422e-07,
        ),
    ),
)

_REGISTRY: dict[str, ThermocoupleType] = {t.name: t for t in (_B, _E, _J, _K, _N, _R, _S, _T)}

#: The supported letter designations, in alphabetical order.
TYPES: tuple[str, ...] = tuple(sorted(_REGISTRY))


def get_type(name: str) -> ThermocoupleType:
    """The reference data of a thermocouple type (letter, case-insensitive)."""
    found = _REGISTRY.get(name.upper()) if isinstance(name, str) else None
    if found is None:
        raise ValueError(f"unknown thermocouple type {name!r}; one of {', '.join(TYPES)}")
    return found


def emf_mv(type: str, t_c: float) -> float:
    """Thermocouple emf in mV at ``t_c`` °C with the reference junction at 0 °C."""
    return get_type(type).emf_mv(t_c)


def temperature_c(type: str, emf: float) -> float:
    """Temperature in °C for an emf in mV (reference junction at 0 °C)."""
    return get_type(type).temperature_c(emf)


def compensated_temperature_c(type: str, measured_mv: float, cold_junction_c: float) -> float:
    """Hot-junction °C from the emf measured against a cold junction at ``cold_junction_c``."""
    tc = get_type(type)
    return tc.temperature_c(measured_mv + tc.emf_mv(cold_junction_c))


def max31855_corrected_c(
    hot_c_reported: float,
    cold_junction_c: float,
    type: str = "K",
    *,
    sensitivity_mv_per_c: float = MAX31855_MV_PER_C,
) -> float:
    """Undo the MAX31855's linear model and return the NIST hot-junction temperature.

    The chip reports ``cj + V/S`` with a constant Seebeck coefficient S (41.276 µV/°C for the
    K variant), so the measured voltage is ``V = (hot - cj)·S``; adding the cold junction's
    true emf and inverting gives the temperature the linear model gets wrong away from 0 °C.
    """
    tc = get_type(type)
    measured_mv = (hot_c_reported - cold_junction_c) * sensitivity_mv_per_c
    return tc.temperature_c(measured_mv + tc.emf_mv(cold_junction_c))
