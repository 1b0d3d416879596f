"""Typed parameters convert both ways; bool stays a flag; unset values name their field."""

from __future__ import annotations

import pytest

from trillium.common.v1 import values_pb2
from trillium.servicekit.errors import ValidationError
from trillium.servicekit.parameters import from_parameter_map, to_parameter, to_parameter_map


def test_round_trip_keeps_types():
    config = {"flag": True, "count": 3, "rate": 0.5, "name": "fedcfa"}
    wire = to_parameter_map(config)
    assert wire["flag"].WhichOneof("kind") == "flag" and wire["count"].WhichOneof("kind") == "integer"
    assert from_parameter_map(wire, "config") == config


def test_unset_value_names_the_field_and_bad_types_are_refused():
    with pytest.raises(ValidationError) as info:
        from_parameter_map({"mu": values_pb2.ParameterValue()}, "config.strategy_parameters")
    assert info.value.field == "config.strategy_parameters.mu"
    with pytest.raises(ValueError, match="value"):
        to_parameter([1, 2])  # type: ignore[arg-type]
