"""Typed hyperparameters on the wire: ``trillium.common.v1.ParameterValue`` <-> Python scalars.

Compression policies (inference) and FL strategies (federated) both carry their hyperparameters as
``map<string, ParameterValue>``; these helpers convert both ways and name the field when a value is
missing.
"""

from __future__ import annotations

from collections.abc import Mapping

from trillium.common.v1 import values_pb2
from trillium.servicekit.errors import ValidationError

Scalar = bool | int | float | str


def to_parameter(value: Scalar) -> values_pb2.ParameterValue:
    """A scalar as a typed ``ParameterValue`` (bool before int: bool is an int in Python)."""
    if isinstance(value, bool):
        return values_pb2.ParameterValue(flag=value)
    if isinstance(value, int):
        return values_pb2.ParameterValue(integer=value)
    if isinstance(value, float):
        return values_pb2.ParameterValue(number=value)
    if isinstance(value, str):
        return values_pb2.ParameterValue(text=value)
    raise ValueError(f"value: {value!r} is not a bool, int, float or str")


def from_parameter(value: values_pb2.ParameterValue, field: str) -> Scalar:
    """The scalar inside ``value``; an unset value is a ``ValidationError`` naming ``field``."""
    kind = value.WhichOneof("kind")
    if kind is None:
        raise ValidationError(field, "the parameter value is not set")
    return getattr(value, kind)


def to_parameter_map(config: Mapping[str, Scalar]) -> dict[str, values_pb2.ParameterValue]:
    return {key: to_parameter(value) for key, value in config.items()}


def from_parameter_map(values: Mapping[str, values_pb2.ParameterValue], field: str) -> dict[str, Scalar]:
    """Every entry of ``values``; errors name ``<field>.<key>``."""
    return {key: from_parameter(value, f"{field}.{key}") for key, value in values.items()}
