"""NIST ITS-90 reference functions: table values, inverse error bands, ranges, corrections."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hardware.thermocouple import (
    MAX31855_MV_PER_C,
    TYPES,
    InverseRange,
    ThermocoupleRangeError,
    compensated_temperature_c,
    emf_mv,
    get_type,
    max31855_corrected_c,
    temperature_c,
)

# NIST Monograph 175 tables (reference junction 0 °C), emf in mV rounded to 0.001 mV.
NIST_TABLE: dict[str, dict[float, float]] = {
    "B": {
        100: 0.033, 200: 0.178, 300: 0.431, 400: 0.787, 500: 1.242, 600: 1.792, 700: 2.431,
        800: 3.154, 900: 3.957, 1000: 4.834, 1100: 5.780, 1200: 6.786, 1300: 7.848,
        1400: 8.956, 1500: 10.099, 1600: 11.263, 1700: 12.433, 1800: 13.591, 1820: 13.820,
    },
    "E": {
        -270: -9.835, -200: -8.825, -100: -5.237, 0: 0.0, 100: 6.319, 200: 13.421,
        300: 21.036, 400: 28.946, 500: 37.005, 600: 45.093, 700: 53.112, 800: 61.017,
        900: 68.787, 1000: 76.373,
    },
    "J": {
        -210: -8.095, -100: -4.633, 0: 0.0, 100: 5.269, 200: 10.779, 300: 16.327,
        400: 21.848, 500: 27.393, 600: 33.102, 700: 39.132, 760: 42.919, 800: 45.494,
        1000: 57.953, 1200: 69.553,
    },
    "K": {
        -270: -6.458, -200: -5.891, -100: -3.554, 0: 0.0, 100: 4.096, 200: 8.138,
        300: 12.209, 400: 16.397, 500: 20.644, 600: 24.905, 700: 29.129, 800: 33.275,
        900: 37.326, 1000: 41.276, 1100: 45.119, 1200: 48.838, 1300: 52.410, 1372: 54.886,
    },
    "N": {
        -270: -4.345, -200: -3.990, -100: -2.407, 0: 0.0, 100: 2.774, 200: 5.913,
        300: 9.341, 400: 12.974, 500: 16.748, 600: 20.613, 700: 24.527, 800: 28.455,
        900: 32.371, 1000: 36.256, 1100: 40.087, 1200: 43.846, 1300: 47.513,
    },
    "R": {
        -50: -0.226, 0: 0.0, 100: 0.647, 200: 1.469, 300: 2.401, 400: 3.408, 500: 4.471,
        600: 5.583, 700: 6.743, 800: 7.950, 900: 9.205, 1000: 10.506, 1100: 11.850,
        1200: 13.228, 1300: 14.629, 1400: 16.040, 1500: 17.451, 1600: 18.849, 1700: 20.222,
        1768.1: 21.103,
    },
    "S": {
        -50: -0.236, 0: 0.0, 100: 0.646, 200: 1.441, 300: 2.323, 400: 3.259, 500: 4.233,
        600: 5.239, 700: 6.275, 800: 7.345, 900: 8.449, 1000: 9.587, 1100: 10.757,
        1200: 11.951, 1300: 13.159, 1400: 14.373, 1500: 15.582, 1600: 16.777, 1700: 17.947,
    },
    "T": {
        -270: -6.258, -200: -5.603, -100: -3.379, 0: 0.0, 100: 4.279, 200: 9.288,
        300: 14.862, 400: 20.872,
    },
}  # fmt: skip

TABLE_POINTS = [(ty, t, e) for ty, table in NIST_TABLE.items() for t, e in table.items()]
INVERSE_RANGES = [(ty, r) for ty in TYPES for r in get_type(ty).inverse]


def band_slack(r: InverseRange) -> float:
    """How far the published polynomials may stray outside their published error band.

    NIST rounds each band to one significant digit and evaluated it at table points; the
    polynomials as published exceed it slightly near a few range ends (worst: type J below
    0 °C reaches +0.0332 °C against +0.03). 15 % of the band's width covers every range and
    still fails a wrong coefficient by orders of magnitude.
    """
    lo, hi = r.error_c
    return 0.15 * (hi - lo)


def test_types_are_the_eight_standard_letters() -> None:
    assert TYPES == ("B", "E", "J", "K", "N", "R", "S", "T")


def test_every_type_has_at_least_eight_table_points() -> None:
    assert set(NIST_TABLE) == set(TYPES)
    assert all(len(table) >= 8 for table in NIST_TABLE.values())


@pytest.mark.parametrize(("type_name", "t_c", "expected_mv"), TABLE_POINTS)
def test_forward_matches_nist_table_to_the_microvolt(
    type_name: str, t_c: float, expected_mv: float
) -> None:
    assert round(emf_mv(type_name, t_c), 3) == pytest.approx(expected_mv, abs=1e-9)


def _slope(type_name: str, t_c: float) -> float:
    tc = get_type(type_name)
    a, b = max(t_c - 0.5, tc.t_min), min(t_c + 0.5, tc.t_max)
    return (emf_mv(type_name, b) - emf_mv(type_name, a)) / (b - a)


@pytest.mark.parametrize(("type_name", "t_c", "expected_mv"), TABLE_POINTS)
def test_every_table_emf_is_its_temperature(type_name: str, t_c: float, expected_mv: float) -> None:
    """The ends included: where the table rounds an end's emf outward (type K at -270 °C:
    -6.458 mV, the function -6.457738 mV), it is still that end's temperature."""
    # The table emf is rounded to 1 µV: allow the temperature that rounding corresponds to.
    rounding_c = 0.0005 / _slope(type_name, t_c)
    assert temperature_c(type_name, expected_mv) == pytest.approx(t_c, abs=rounding_c + 1e-9)


def test_known_values_from_the_brief() -> None:
    assert round(emf_mv("K", 100), 3) == 4.096
    assert round(emf_mv("K", 500), 3) == 20.644
    assert round(emf_mv("K", 1000), 3) == 41.276
    assert round(emf_mv("K", -100), 3) == -3.554
    assert temperature_c("K", 41.276) == pytest.approx(1000, abs=0.06)


def test_type_k_exponential_term_applies_from_zero() -> None:
    k = get_type("K")
    assert k.exponential is not None
    a0, a1, a2 = k.exponential
    assert a2 == pytest.approx(126.9686)
    t = a2  # the exponential term peaks at a2
    assert emf_mv("K", t) == pytest.approx(k.forward[1].evaluate(t) + a0, abs=1e-12)
    assert emf_mv("K", -1.0) == pytest.approx(k.forward[0].evaluate(-1.0), abs=1e-15)
    # Both pieces meet at 0 °C: the exponential term cancels c0 of the upper piece.
    assert abs(emf_mv("K", 0.0)) < 2e-6
    assert a1 < 0


@pytest.mark.parametrize("type_name", TYPES)
def test_forward_pieces_are_continuous(type_name: str) -> None:
    tc = get_type(type_name)
    for lower, upper in itertools.pairwise(tc.forward):
        assert lower.t_max == upper.t_min
        below = tc.emf_mv(math.nextafter(upper.t_min, -math.inf))
        at = tc.emf_mv(upper.t_min)
        assert at == pytest.approx(below, abs=2e-6)


@pytest.mark.parametrize("type_name", TYPES)
def test_inverse_ranges_are_contiguous_or_overlap(type_name: str) -> None:
    ranges = get_type(type_name).inverse
    for lower, upper in itertools.pairwise(ranges):
        assert upper.emf_min <= lower.emf_max
        assert upper.emf_max > lower.emf_max
        assert upper.error_c[0] < 0 < upper.error_c[1]


def test_r_and_s_overlap_uses_the_narrower_band() -> None:
    for ty, emf in (("R", 12.0), ("S", 11.0)):
        r = get_type(ty).inverse_range(emf)
        assert r.t_min == 1064.0
        assert r.error_c[1] - r.error_c[0] <= 0.0015


@pytest.mark.parametrize(("type_name", "r"), INVERSE_RANGES)
def test_inverse_error_reaches_but_stays_in_band_on_a_dense_grid(
    type_name: str, r: InverseRange
) -> None:
    tc = get_type(type_name)
    errors = []
    n = 4000
    for k in range(n + 1):
        t = r.t_min + (r.t_max - r.t_min) * k / n
        e = tc.emf_mv(t)
        if r.emf_min <= e <= r.emf_max:
            errors.append(r.evaluate(e) - t)
    lo, hi = r.error_c
    assert lo - band_slack(r) <= min(errors)
    assert max(errors) <= hi + band_slack(r)
    # The band is really used: these are NIST's polynomials, not a tighter fit.
    assert max(errors) - min(errors) >= 0.4 * (hi - lo)


@pytest.mark.parametrize(("type_name", "r"), INVERSE_RANGES)
@settings(max_examples=150, deadline=None)
@given(frac=st.floats(min_value=0.0, max_value=1.0))
def test_inverse_of_forward_within_band(type_name: str, r: InverseRange, frac: float) -> None:
    tc = get_type(type_name)
    t = r.t_min + (r.t_max - r.t_min) * frac
    e = tc.emf_mv(t)
    assume(r.emf_min <= e <= r.emf_max)
    lo, hi = r.error_c
    assert lo - band_slack(r) <= r.evaluate(e) - t <= hi + band_slack(r)
    # Whatever piece temperature_c picks for this emf, the result is as good as its band.
    chosen = tc.inverse_range(e)
    clo, chi = chosen.error_c
    assert clo - band_slack(chosen) <= tc.temperature_c(e) - t <= chi + band_slack(chosen)


def _monotonic_floor(type_name: str) -> float:
    # Type B's emf dips to about -2.6 µV near 21 °C before rising (a real property of
    # Pt-30%Rh/Pt-6%Rh, and why type B is not used below 50 °C): monotonic from 25 °C.
    return 25.0 if type_name == "B" else get_type(type_name).t_min


@pytest.mark.parametrize("type_name", TYPES)
@settings(max_examples=200, deadline=None)
@given(a=st.floats(0.0, 1.0), b=st.floats(0.0, 1.0))
def test_forward_is_strictly_increasing(type_name: str, a: float, b: float) -> None:
    tc = get_type(type_name)
    floor = _monotonic_floor(type_name)
    t1, t2 = sorted(floor + (tc.t_max - floor) * x for x in (a, b))
    assume(t2 - t1 >= 1e-3)
    assert tc.emf_mv(t1) < tc.emf_mv(t2)


def test_type_b_dips_below_zero_near_room_temperature() -> None:
    assert emf_mv("B", 0.0) == 0.0
    assert emf_mv("B", 20.0) < emf_mv("B", 10.0) < 0.0
    assert round(emf_mv("B", 20.0), 3) == -0.003
    assert emf_mv("B", 50.0) > emf_mv("B", 25.0)


@pytest.mark.parametrize("type_name", TYPES)
def test_forward_out_of_range_raises_with_range(type_name: str) -> None:
    tc = get_type(type_name)
    for bad in (tc.t_min - 0.001, tc.t_max + 0.001, math.nan, math.inf, -math.inf):
        with pytest.raises(ThermocoupleRangeError) as info:
            emf_mv(type_name, bad)
        assert f"{tc.t_min:g} to {tc.t_max:g} °C" in str(info.value)
        assert info.value.type_name == type_name
    emf_mv(type_name, tc.t_min)
    emf_mv(type_name, tc.t_max)


@pytest.mark.parametrize("type_name", TYPES)
def test_inverse_out_of_range_raises_with_range(type_name: str) -> None:
    tc = get_type(type_name)
    for bad in (tc.emf_min - 0.001, tc.emf_max + 0.001, math.nan, math.inf):
        with pytest.raises(ThermocoupleRangeError) as info:
            temperature_c(type_name, bad)
        assert f"{tc.emf_min:g} to {tc.emf_max:g} mV" in str(info.value)
    assert isinstance(ThermocoupleRangeError("x", type_name="K", value=1.0), ValueError)
    temperature_c(type_name, tc.emf_min)
    temperature_c(type_name, tc.emf_max)


def test_type_k_inverts_below_minus_200_where_no_published_polynomial_does() -> None:
    assert temperature_c("K", emf_mv("K", -250.0)) == pytest.approx(-250.0, abs=1e-6)
    assert temperature_c("K", emf_mv("K", -270.0)) == -270.0
    with pytest.raises(
        ThermocoupleRangeError, match=r"-6\.45774 to 54\.8864 mV \(-270 to 1372 °C\)"
    ):
        temperature_c("K", -6.459)


@pytest.mark.parametrize("type_name", TYPES)
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_round_trip_is_within_a_millikelvin_over_the_whole_range(
    type_name: str, data: st.DataObject
) -> None:
    """temperature -> emf -> temperature, anywhere in the reference function's range (for
    type B: above the minimum of its emf, near 21 °C). The published inverse polynomials
    alone are off by up to 0.06 °C."""
    tc = get_type(type_name)
    t = data.draw(st.floats(tc.inverse_t_min, tc.t_max), label="t")
    assert abs(tc.temperature_c(tc.emf_mv(t)) - t) <= 0.001


@pytest.mark.parametrize(
    ("type_name", "t_c"),
    [("K", 1371.5), ("J", -201.0), ("T", -200.0), ("E", 1000.0), ("N", -270.0), ("B", 250.0)],
)
def test_round_trip_where_the_published_polynomials_are_worst(type_name: str, t_c: float) -> None:
    nist = get_type(type_name).inverse_range(emf_mv(type_name, t_c))
    assert temperature_c(type_name, emf_mv(type_name, t_c)) == pytest.approx(t_c, abs=1e-6)
    if nist.t_min <= t_c <= nist.t_max:  # the published polynomial alone is worse
        assert abs(nist.evaluate(emf_mv(type_name, t_c)) - t_c) > 1e-3


def test_the_table_end_of_type_k_is_a_temperature_with_the_cold_junction_at_zero() -> None:
    # E(0 °C) of type K is 2 nV above zero (the exponential term nearly cancels c0): the
    # table's 54.886 mV at 1372 °C was once refused by those 2 nV.
    assert compensated_temperature_c("K", 54.886, 0.0) == pytest.approx(1372.0, abs=0.015)


@pytest.mark.parametrize("type_name", TYPES)
def test_an_emf_within_half_a_table_digit_past_an_end_is_the_end(type_name: str) -> None:
    tc = get_type(type_name)
    assert temperature_c(type_name, tc.emf_max + 0.0004) == tc.t_max
    assert temperature_c(type_name, tc.emf_min - 0.0004) == tc.inverse_t_min
    assert temperature_c(type_name, tc.emf_max) == tc.t_max
    for beyond in (tc.emf_max + 0.0006, tc.emf_min - 0.0006):
        with pytest.raises(ThermocoupleRangeError):
            temperature_c(type_name, beyond)


def test_type_b_below_its_emf_minimum_gives_the_branch_above_it() -> None:
    b = get_type("B")
    assert 21.0 < b.inverse_t_min < 21.1  # where B's emf stops falling
    assert b.emf_min == pytest.approx(-0.002585, abs=1e-6)
    for t in (0.0, 5.0, 15.0, 21.0):  # an emf these share with a temperature above 21 °C
        found = temperature_c("B", emf_mv("B", t))
        assert found >= b.inverse_t_min
        assert emf_mv("B", found) == pytest.approx(emf_mv("B", t), abs=1e-12)
    assert temperature_c("B", 0.0) == pytest.approx(42.13, abs=0.01)


def test_unknown_type_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="one of B, E, J, K, N, R, S, T"):
        emf_mv("X", 10.0)
    assert emf_mv("k", 100.0) == emf_mv("K", 100.0)


@pytest.mark.parametrize(
    ("type_name", "measured", "cj", "expected"),
    [
        ("K", 4.096 - 1.000, 25.0, 100.0),  # K(25 °C) = 1.000 mV
        ("K", 0.0, 25.0, 25.0),
        ("J", 5.269 - 1.019, 20.0, 100.0),  # J(20 °C) = 1.019 mV
        ("T", 4.279 - 0.790, 20.0, 100.0),  # T(20 °C) = 0.790 mV
    ],
)
def test_cold_junction_compensation(
    type_name: str, measured: float, cj: float, expected: float
) -> None:
    assert compensated_temperature_c(type_name, measured, cj) == pytest.approx(expected, abs=0.05)


@pytest.mark.parametrize("type_name", ["E", "J", "K", "N", "T"])
@settings(max_examples=100, deadline=None)
@given(hot=st.floats(0.0, 350.0), cj=st.floats(-10.0, 45.0))
def test_compensation_recovers_hot_junction(type_name: str, hot: float, cj: float) -> None:
    measured = emf_mv(type_name, hot) - emf_mv(type_name, cj)
    assert compensated_temperature_c(type_name, measured, cj) == pytest.approx(hot, abs=0.001)


def test_compensation_out_of_range() -> None:
    with pytest.raises(ThermocoupleRangeError):
        compensated_temperature_c("K", 54.886, 25.0)


def test_max31855_correction_undoes_the_linear_model() -> None:
    cj = 25.0
    for hot in (-150.0, -50.0, 0.0, 25.0, 100.0, 300.0, 700.0, 1200.0):
        # What the chip reports for a true hot junction temperature.
        volts = emf_mv("K", hot) - emf_mv("K", cj)
        reported = cj + volts / MAX31855_MV_PER_C
        assert max31855_corrected_c(reported, cj) == pytest.approx(hot, abs=0.06)
    # The correction matters: at -150 °C the chip's linear model is off by degrees.
    volts = emf_mv("K", -150.0) - emf_mv("K", cj)
    assert abs((cj + volts / MAX31855_MV_PER_C) - (-150.0)) > 5


def test_max31855_formula_exactly() -> None:
    hot, cj = 412.75, 23.5
    expected = temperature_c("K", (hot - cj) * 0.041276 + emf_mv("K", cj))
    assert max31855_corrected_c(hot, cj) == expected
    assert max31855_corrected_c(hot, cj, "J") == temperature_c(
        "J", (hot - cj) * 0.041276 + emf_mv("J", cj)
    )
    custom = max31855_corrected_c(hot, cj, "J", sensitivity_mv_per_c=0.057953)
    assert custom == temperature_c("J", (hot - cj) * 0.057953 + emf_mv("J", cj))


def test_max31855_out_of_range() -> None:
    with pytest.raises(ThermocoupleRangeError):
        max31855_corrected_c(2000.0, 25.0)


def test_keyword_names_of_the_public_functions() -> None:
    assert emf_mv(type="K", t_c=100.0) == emf_mv("K", 100.0)
    assert temperature_c(type="K", emf=4.096) == temperature_c("K", 4.096)
    assert compensated_temperature_c(
        type="K", measured_mv=3.096, cold_junction_c=25.0
    ) == compensated_temperature_c("K", 3.096, 25.0)
    assert max31855_corrected_c(
        hot_c_reported=100.0, cold_junction_c=25.0, type="J"
    ) == max31855_corrected_c(100.0, 25.0, "J")
