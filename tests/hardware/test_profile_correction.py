"""A profile's correction step: a polynomial on the kind's result, in the display unit."""

from __future__ import annotations

import pytest

from common.profiles import ConversionError, ProfileError, build_converter
from hardware.thermocouple import emf_mv


def test_a_correction_follows_the_kind() -> None:
    payload = {"a": 2.0, "b": 1.0, "correction": {"coefficients": [0.5, 0.9]}}
    assert build_converter("linear", payload).convert(1.0) == pytest.approx(0.5 + 0.9 * 3.0)
    plain = build_converter("linear", {"a": 2.0, "b": 1.0})
    assert plain.convert(1.0) == 3.0


def test_a_correction_applies_in_the_display_unit() -> None:
    correction = {"coefficients": [-0.8, 1.0], "calibration_id": "c-1"}
    payload = {"type": "K", "cold_junction_c": 0.0, "correction": correction}
    in_f = build_converter("thermocouple", payload, "°F", "mV").convert(emf_mv("K", 400.0))
    assert in_f == pytest.approx(400.0 * 9 / 5 + 32 - 0.8, abs=1e-6)
    in_uv = build_converter("thermocouple", payload, "°C", "µV").convert(emf_mv("K", 400.0) * 1000)
    assert in_uv == pytest.approx(399.2, abs=1e-6)


@pytest.mark.parametrize(
    ("correction", "field"),
    [
        ({"coefficients": []}, "correction.coefficients"),
        ({"coefficients": ["x"]}, "correction.coefficients.0"),
        ({"coefficients": [1.0], "offset": 2}, "correction.offset"),
        ([1.0, 2.0], "correction"),
    ],
)
def test_a_correction_that_is_no_polynomial_is_named(correction: object, field: str) -> None:
    with pytest.raises(ProfileError) as info:
        build_converter("linear", {"a": 1.0, "correction": correction})
    assert [f for f, _ in info.value.errors] == [field]


def test_a_correction_that_overflows_is_a_conversion_error() -> None:
    conv = build_converter("linear", {"a": 1.0, "correction": {"coefficients": [0, 0, 1e300]}})
    with pytest.raises(ConversionError, match="non-finite"):
        conv.convert(1e10)
