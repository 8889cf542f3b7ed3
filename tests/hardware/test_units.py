"""Units: lab spellings parse to one canonical unit; conversions are an affine map."""

from __future__ import annotations

import pytest

from common import units
from common.profiles import build_converter


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("°C", "°C"), ("degC", "°C"), ("C", "°C"), ("celsius", "°C"), ("Celsius", "°C"),
        ("deg C", "°C"), ("℃", "°C"), (" c ", "°C"),
        ("F", "°F"), ("degF", "°F"), ("fahrenheit", "°F"), ("K", "K"), ("kelvin", "K"),
        ("mV", "mV"), ("millivolt", "mV"), ("millivolts", "mV"), ("V", "V"), ("volt", "V"),
        ("uV", "µV"), ("µV", "µV"), ("μV", "µV"), ("microvolt", "µV"),
        ("bar", "bar"), ("kg/m^3", "kg/m³"), ("%", "%"),
    ],
)  # fmt: skip
def test_lab_spellings_have_one_canonical_form(written: str, canonical: str) -> None:
    assert units.canonical(written) == canonical
    assert units.canonical(canonical) == canonical  # the canonical form parses back


def test_c_and_f_are_temperatures_not_coulomb_and_farad() -> None:
    # To pint, C is the coulomb and F the farad; a lab writing them means degrees.
    assert units.parse("C").dimension == "temperature"
    assert units.parse("F").dimension == "temperature"
    assert units.parse("coulomb").dimension == "charge"
    assert units.parse("pC").symbol == "pC"  # prefixed forms stay pint's
    assert units.parse("nF").dimension == "capacitance"


@pytest.mark.parametrize("text", ["", "   ", "bananas", "raw", "mV/"])
def test_not_a_unit(text: str) -> None:
    with pytest.raises(units.UnitError):
        units.parse(text)


@pytest.mark.parametrize(
    "text", ["mV!", "millivolts?", "m#V", "mV#x", "m,V", "m=V", "mV;", "'mV'", "m.V", "mV."]
)
def test_stray_characters_are_refused_not_skipped(text: str) -> None:
    # pint's tokenizer drops them silently: "m#V" would be stored as the metre.
    with pytest.raises(units.UnitError, match="is not part of a unit"):
        units.parse(text)


@pytest.mark.parametrize("written", ["m/s**2", "m**2", "1/s", "m^-1", "kg·m/s²", "delta_degC"])
def test_operators_and_exponents_still_parse(written: str) -> None:
    assert units.parse(written).symbol


@pytest.mark.parametrize("t_c", [-40.0, 0.0, 24.5, 100.0, 1234.5])
def test_temperature_conversions_match_the_definitions(t_c: float) -> None:
    c, f, k = units.parse("°C"), units.parse("°F"), units.parse("K")
    a, b = units.affine(c, f)
    assert a * t_c + b == pytest.approx(t_c * 9 / 5 + 32, rel=1e-12, abs=1e-12)
    a, b = units.affine(c, k)
    assert a * t_c + b == pytest.approx(t_c + 273.15, rel=1e-12)


def test_different_dimensions_do_not_convert() -> None:
    with pytest.raises(units.UnitError, match="voltage"):
        units.affine(units.parse("mV"), units.parse("°C"))


@pytest.mark.parametrize("display", ["°F", "K"])
def test_display_in_f_and_k_matches_c(display: str) -> None:
    payload = {"type": "K", "cold_junction_c": 0.0}
    for emf in (-2.0, 0.5, 4.096, 20.0, 41.0):
        t_c = build_converter("thermocouple", payload, "°C", "mV").convert(emf)
        other = build_converter("thermocouple", payload, display, "mV").convert(emf)
        back = (other - 32) * 5 / 9 if display == "°F" else other - 273.15
        assert back == pytest.approx(t_c, rel=1e-12, abs=1e-9)


def test_linear_payload_declares_its_units() -> None:
    # Coefficients for volts to bar; a sensor read in mV and shown in psi.
    payload = {"a": 25.0, "b": 0.0, "input_unit": "V", "output_unit": "bar"}
    conv = build_converter("linear", payload, "psi", "mV")
    assert conv.convert(2000.0) == pytest.approx(50.0 * 14.503773773, rel=1e-6)
    # Without unit declarations, numbers are taken as the sensor states them.
    assert build_converter("linear", {"a": 2.0, "b": 1.0}, "°C", "mV").convert(3.0) == 7.0


@pytest.mark.parametrize(
    ("source", "target"),
    [("°C", "Δ°C"), ("Δ°C", "°F"), ("delta_degF", "degC")],
)
def test_an_absolute_temperature_and_a_difference_do_not_convert(source: str, target: str) -> None:
    # Both are temperatures to pint, yet 20 °C is no difference of temperature.
    with pytest.raises(units.UnitError, match="does not convert"):
        units.affine(units.parse(source), units.parse(target))


@pytest.mark.parametrize(("source", "target"), [("dBm", "W"), ("W", "dBm"), ("1", "dB")])
def test_logarithmic_units_are_no_scale_and_offset(source: str, target: str) -> None:
    # 10 dBm is 10 mW, not the 3.6 mW a straight line through 0 and 1 dBm gives.
    with pytest.raises(units.UnitError, match="scale and an offset"):
        units.affine(units.parse(source), units.parse(target))


def test_a_very_long_unit_is_refused_before_pint_reads_it() -> None:
    # pint's time grows with the square of a word's length; a payload may be a megabyte.
    with pytest.raises(units.UnitError, match="longer than"):
        units.parse("m" * 5000)


@pytest.mark.parametrize(
    "text", ["mV**0.5", "m**1.5", "mV", "kg/m^3", "degC/s", "coulomb", "farad", "mF"]
)
def test_a_canonical_spelling_always_parses_back(text: str) -> None:
    # It is what is stored, and read again when the sensor's profile changes: a coulomb
    # stored as C would come back as °C.
    try:
        unit = units.parse(text)
    except units.UnitError:
        return
    assert units.parse(unit.symbol) == unit
