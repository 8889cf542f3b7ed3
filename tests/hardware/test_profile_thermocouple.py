"""The ``thermocouple`` conversion profile kind."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.profiles import KINDS, ConversionError, ProfileError, UnitMismatch, build_converter
from common.profiles.thermocouple import Thermocouple
from hardware.thermocouple import (
    TYPES,
    compensated_temperature_c,
    emf_mv,
    get_type,
    max31855_corrected_c,
    temperature_c,
)


def errors_of(payload: Any, display_unit: str | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ProfileError) as info:
        build_converter("thermocouple", payload, display_unit)
    return info.value.errors


def test_kind_is_registered() -> None:
    assert "thermocouple" in KINDS


def test_minimal_payload_defaults() -> None:
    conv = build_converter("thermocouple", {"type": "K"})
    assert conv == Thermocouple(type="K", cold_junction_c=None, input="mV")


@pytest.mark.parametrize(
    ("input_unit", "raw"),
    [("mV", 4.096), ("millivolt", 4.096), ("V", 0.004096), ("uV", 4096.0), ("µV", 4096.0)],
)
def test_the_same_emf_in_any_voltage_unit_gives_the_same_temperature(
    input_unit: str, raw: float
) -> None:
    payload = {"type": "K", "cold_junction_c": 0.0}
    conv = build_converter("thermocouple", payload, "°C", input_unit)
    assert conv.convert(raw) == pytest.approx(compensated_temperature_c("K", 4.096, 0.0), rel=1e-12)
    assert conv.convert(raw) == pytest.approx(100.0, abs=0.05)


@pytest.mark.parametrize("input_unit", ["C", "°C", "degC", "bar", "mA"])
def test_an_input_unit_that_is_no_voltage_is_refused(input_unit: str) -> None:
    with pytest.raises(UnitMismatch) as err:
        build_converter("thermocouple", {"type": "K"}, "°C", input_unit)
    assert err.value.field == "input_unit"
    assert "voltage" in err.value.reason


def test_a_max31855_reads_a_temperature() -> None:
    payload = {"type": "K", "input": "max31855"}
    with pytest.raises(UnitMismatch):
        build_converter("thermocouple", payload, "°C", "mV")
    in_c = build_converter("thermocouple", payload, "°C", "C").convert(
        100.0, {"cold_junction_c": 25}
    )
    in_f = build_converter("thermocouple", payload, "°C", "°F").convert(
        212.0, {"cold_junction_c": 25}
    )
    assert in_f == pytest.approx(in_c, rel=1e-12)


@pytest.mark.parametrize("type_name", TYPES)
def test_every_type_converts_emf_with_fixed_cold_junction(type_name: str) -> None:
    conv = build_converter("thermocouple", {"type": type_name, "cold_junction_c": 0.0})
    hot = 300.0 if type_name == "T" else 600.0
    assert conv.convert(emf_mv(type_name, hot)) == pytest.approx(hot, abs=0.05)


def test_cold_junction_from_payload_is_compensated() -> None:
    conv = build_converter("thermocouple", {"type": "K", "cold_junction_c": 25.0})
    measured = emf_mv("K", 300.0) - emf_mv("K", 25.0)
    assert conv.convert(measured) == pytest.approx(300.0, abs=0.05)
    # The payload's cold junction wins over the reading's meta.
    assert conv.convert(measured, {"cold_junction_c": 0.0}) == pytest.approx(300.0, abs=0.05)


def test_cold_junction_from_meta() -> None:
    conv = build_converter("thermocouple", {"type": "J"})
    measured = emf_mv("J", 150.0) - emf_mv("J", 22.5)
    assert conv.convert(measured, {"cold_junction_c": 22.5}) == pytest.approx(150.0, abs=0.05)
    assert conv.convert(measured, {"cold_junction_c": 22}) == pytest.approx(
        temperature_c("J", measured + emf_mv("J", 22.0))
    )


@pytest.mark.parametrize("meta", [None, {}, {"unit": "C"}])
def test_missing_cold_junction_names_it(meta: dict[str, Any] | None) -> None:
    conv = build_converter("thermocouple", {"type": "K"})
    pattern = r'cold_junction_c is required.*meta\["cold_junction_c"\]'
    with pytest.raises(ConversionError, match=pattern):
        conv.convert(1.0, meta)


@pytest.mark.parametrize("bad", ["25", None, True, math.nan, math.inf, [25]])
def test_invalid_meta_cold_junction(bad: Any) -> None:
    conv = build_converter("thermocouple", {"type": "K"})
    with pytest.raises(ConversionError, match="cold_junction_c"):
        conv.convert(1.0, {"cold_junction_c": bad})


def test_meta_cold_junction_out_of_range() -> None:
    conv = build_converter("thermocouple", {"type": "K"})
    with pytest.raises(ConversionError, match="-270 to 1372 °C"):
        conv.convert(1.0, {"cold_junction_c": -300.0})


@pytest.mark.parametrize(("display", "expected"), [("C", 100.0), ("F", 212.0), ("K", 373.15)])
def test_display_units(display: str, expected: float) -> None:
    conv = build_converter(
        "thermocouple", {"type": "K", "cold_junction_c": 0.0, "display": display}
    )
    t_c = compensated_temperature_c("K", 4.096, 0.0)
    exact = {"C": t_c, "F": t_c * 1.8 + 32.0, "K": t_c + 273.15}[display]
    assert conv.convert(4.096) == pytest.approx(exact, abs=1e-9)
    assert conv.convert(4.096) == pytest.approx(expected, abs=0.1)


@pytest.mark.parametrize(
    ("sensor_unit", "expected"),
    [
        ("C", 100.0), ("°C", 100.0), ("degC", 100.0), ("celsius", 100.0), (" c ", 100.0),
        ("F", 212.0), ("°F", 212.0), ("Fahrenheit", 212.0),
        ("K", 373.15), ("kelvin", 373.15), (None, 100.0),
    ],
)  # fmt: skip
def test_display_follows_the_sensor_unit(sensor_unit: str | None, expected: float) -> None:
    conv = build_converter("thermocouple", {"type": "K", "cold_junction_c": 0.0}, sensor_unit)
    assert conv.convert(4.096) == pytest.approx(expected, abs=0.1)


@pytest.mark.parametrize("sensor_unit", ["mV", "bar", "C·m"])
def test_a_display_unit_that_is_no_temperature_is_refused(sensor_unit: str) -> None:
    with pytest.raises(UnitMismatch) as err:
        build_converter("thermocouple", {"type": "K"}, sensor_unit)
    assert err.value.field == "display_unit"


def test_payload_display_must_agree_with_the_sensor_unit() -> None:
    with pytest.raises(ProfileError) as err:
        build_converter("thermocouple", {"type": "K", "display": "K"}, "°F")
    assert err.value.errors[0][0] == "display"
    conv = build_converter("thermocouple", {"type": "K", "cold_junction_c": 0.0, "display": "K"})
    assert conv.convert(4.096) == pytest.approx(373.15, abs=0.1)
    # A profile stored before units were checked keeps converting into its payload's unit.
    conv = build_converter(
        "thermocouple", {"type": "K", "cold_junction_c": 0.0, "display": "K"}, "°F", lenient=True
    )
    assert conv.convert(4.096) == pytest.approx(373.15, abs=0.1)


def test_max31855_input_corrects_the_chip() -> None:
    conv = build_converter("thermocouple", {"type": "K", "input": "max31855"})
    cj = 24.0
    hot = 800.0
    reported = cj + (emf_mv("K", hot) - emf_mv("K", cj)) / 0.041276
    assert conv.convert(reported, {"cold_junction_c": cj}) == pytest.approx(hot, abs=0.06)
    assert conv.convert(reported, {"cold_junction_c": cj}) == max31855_corrected_c(reported, cj)
    with pytest.raises(ConversionError, match="cold_junction_c"):
        conv.convert(reported)


def test_max31855_input_with_fixed_cold_junction_in_fahrenheit() -> None:
    conv = build_converter(
        "thermocouple",
        {"type": "K", "input": "max31855", "cold_junction_c": 20.0, "display": "F"},
    )
    expected_c = max31855_corrected_c(250.0, 20.0)
    assert conv.convert(250.0) == pytest.approx(expected_c * 1.8 + 32.0)


@pytest.mark.parametrize("raw", [100.0, -20.0, math.nan, math.inf, -math.inf])
def test_out_of_range_or_non_finite_raw_is_a_conversion_error(raw: float) -> None:
    conv = build_converter("thermocouple", {"type": "K", "cold_junction_c": 25.0})
    with pytest.raises(ConversionError):
        conv.convert(raw)


def test_out_of_range_message_states_the_range() -> None:
    conv = build_converter("thermocouple", {"type": "T", "cold_junction_c": 0.0})
    with pytest.raises(ConversionError, match=r"-6\.25751 to 20\.872 mV \(-270 to 400 °C\)"):
        conv.convert(21.0)


@pytest.mark.parametrize("type_name", TYPES)
@settings(max_examples=60, deadline=None)
@given(frac=st.floats(0.0, 1.0), cj=st.floats(-10.0, 45.0))
def test_a_profile_converts_any_emf_of_the_range_to_within_a_millikelvin(
    type_name: str, frac: float, cj: float
) -> None:
    """With its cold junction in the payload (worked out once) or in the reading's meta."""
    tc = get_type(type_name)
    hot = tc.inverse_t_min + (tc.t_max - tc.inverse_t_min) * frac
    cj = max(cj, tc.inverse_t_min) if type_name == "B" else cj
    measured = emf_mv(type_name, hot) - emf_mv(type_name, cj)
    fixed = build_converter("thermocouple", {"type": type_name, "cold_junction_c": cj})
    from_meta = build_converter("thermocouple", {"type": type_name})
    assert abs(fixed.convert(measured) - hot) <= 0.001
    assert abs(from_meta.convert(measured, {"cold_junction_c": cj}) - hot) <= 0.001


def test_the_nist_table_end_of_type_k_converts() -> None:
    conv = build_converter("thermocouple", {"type": "K", "cold_junction_c": 0.0})
    assert conv.convert(54.886) == pytest.approx(1372.0, abs=0.015)


@pytest.mark.parametrize(
    ("payload", "field", "fragment"),
    [
        ({}, "type", "Field required"),
        ({"type": "X"}, "type", "one of B, E, J, K, N, R, S, T"),
        ({"type": 3}, "type", "one of B, E, J, K, N, R, S, T"),
        ({"type": "K", "cold_junction_c": math.nan}, "cold_junction_c", "finite"),
        ({"type": "K", "cold_junction_c": math.inf}, "cold_junction_c", "finite"),
        ({"type": "K", "cold_junction_c": "warm"}, "cold_junction_c", "number"),
        ({"type": "K", "cold_junction_c": 1400}, "cold_junction_c", "-270 to 1372 °C"),
        ({"type": "B", "cold_junction_c": -10}, "cold_junction_c", "0 to 1820 °C"),
        ({"type": "R", "cold_junction_c": -60}, "cold_junction_c", "-50 to 1768.1 °C"),
        ({"type": "K", "display": "R"}, "display", "'C', 'F' or 'K'"),
        ({"type": "K", "input": "V"}, "input", "'mV' or 'max31855'"),
        ({"type": "K", "a": 1}, "a", "Extra inputs are not permitted"),
    ],
)
def test_invalid_payloads_are_precise(payload: dict[str, Any], field: str, fragment: str) -> None:
    errors = errors_of(payload)
    assert [f for f, _ in errors] == [field]
    assert fragment in errors[0][1]


def test_invalid_type_does_not_also_report_cold_junction() -> None:
    assert [f for f, _ in errors_of({"type": "Q", "cold_junction_c": 25.0})] == ["type"]


def test_lowercase_type_is_accepted() -> None:
    conv = build_converter("thermocouple", {"type": "k"})
    assert isinstance(conv, Thermocouple)
    assert conv.type == "K"


def test_payload_must_be_an_object() -> None:
    assert errors_of([1, 2]) == [("", "payload must be a JSON object")]


@settings(max_examples=200, deadline=None)
@given(
    type_name=st.sampled_from(["E", "J", "K", "N", "T"]),
    hot=st.floats(-150.0, 390.0),
    cj=st.floats(-20.0, 50.0),
)
def test_round_trip_through_the_profile(type_name: str, hot: float, cj: float) -> None:
    conv = build_converter("thermocouple", {"type": type_name})
    measured = emf_mv(type_name, hot) - emf_mv(type_name, cj)
    assert conv.convert(measured, {"cold_junction_c": cj}) == pytest.approx(hot, abs=0.06)
