"""Every node refuses the numbers ComfyUI's own check lets through, naming the input: NaN (every comparison with NaN
is false, so a JSON NaN in a workflow passes ComfyUI's min/max check) and values that arrive through a link (never
checked): fractions for an INT, values outside the declared range. The check runs before the node's own work, so
it holds for nodes that need a ComfyUI model too."""

from __future__ import annotations

import math

import pytest
from genaffect import NODE_CLASS_MAPPINGS
from genaffect.models.errors import GenAffectInputError, checked_number
from genaffect.nodes.number_inputs import check_numbers, number_inputs

NODES = sorted(NODE_CLASS_MAPPINGS.items())
CASES = [(name, cls, input_name, kind, options) for name, cls in NODES
         for input_name, (kind, options) in number_inputs(cls).items()]


def _call(cls, **values):
    """The node's FUNCTION with ``values`` and nothing else: the number check runs first, before any missing input
    or ComfyUI object could matter."""
    return getattr(cls(), cls.FUNCTION)(**values)


@pytest.mark.parametrize("name, cls, input_name, kind, options", CASES, ids=[f"{c[0]}.{c[2]}" for c in CASES])
def test_nan_and_out_of_range_values_are_refused_naming_the_input(name, cls, input_name, kind, options):
    bad = [math.nan, math.inf, -math.inf, "0.5"]
    if "max" in options:
        bad.append(options["max"] + (1 if kind == "INT" else 0.5))
    if "min" in options:
        bad.append(options["min"] - (1 if kind == "INT" else 0.5))
    if kind == "INT":
        bad.append(options.get("default", 1) + 0.5)
    for value in bad:
        given = [value] if getattr(cls, "INPUT_IS_LIST", False) else value
        with pytest.raises(GenAffectInputError, match=rf"^{input_name} is "):
            _call(cls, **{input_name: given})


def test_a_whole_float_for_an_int_input_is_taken_as_the_int():
    interpolate = NODE_CLASS_MAPPINGS["GenAffectExpressionInterpolate"]
    preset = NODE_CLASS_MAPPINGS["GenAffectExpressionPreset"]()
    a, b = preset.build("neutral", 1.0)[0], preset.build("happy", 1.0)[0]
    assert len(interpolate().interpolate(a, b, 3.0, "linear")[0]) == 3
    assert check_numbers(interpolate, {"steps": 4.0})["steps"] == 4 and isinstance(
        check_numbers(interpolate, {"steps": 4.0})["steps"], int)


def test_the_guard_refuses_a_nan_identity_limit_that_would_have_switched_its_identity_check_off():
    guard = NODE_CLASS_MAPPINGS["GenAffectSamplingGuard"]
    with pytest.raises(GenAffectInputError, match="^min_identity is nan"):
        guard().build(object(), object(), object(), 1, 2, math.nan, 1.0)


def test_positional_inputs_are_checked_too():
    preset = NODE_CLASS_MAPPINGS["GenAffectExpressionPreset"]
    with pytest.raises(GenAffectInputError, match="^intensity is nan"):
        preset().build("happy", math.nan)


@pytest.mark.parametrize("value, whole, low, high, expected", [
    (2, True, 2, None, 2), (3.0, True, None, None, 3), (0.25, False, 0, 1, 0.25), (True, False, None, None, None),
    (2.5, True, None, None, None), (math.nan, False, None, None, None), (5, True, None, 4, None)])
def test_checked_number(value, whole, low, high, expected):
    if expected is None:
        with pytest.raises(GenAffectInputError, match="^x is "):
            checked_number("x", value, whole=whole, low=low, high=high)
    else:
        assert checked_number("x", value, whole=whole, low=low, high=high) == expected
