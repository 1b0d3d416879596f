"""Policy registry: discover policies and their hyperparameters, build one from plain values.

The inference service exposes :func:`list_policies` over gRPC and builds requests' policies with
:func:`make_policy`; every bad input raises ``ValueError`` naming the offending argument.
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, dataclass, fields
from typing import Any

from trillium.kvcompress.budgets.layer import validate_budget
from trillium.kvcompress.policies import (
    H2O,
    AccKV,
    AdaKV,
    FlowMM,
    LookM,
    MadaKV,
    Policy,
    PureKV,
    PyramidKV,
    RandomEviction,
    SnapKV,
    StreamingLLM,
)

__all__ = ["POLICIES", "ParameterSpec", "PolicySpec", "get_policy_spec", "list_policies", "make_policy"]

POLICIES: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (
        RandomEviction,
        StreamingLLM,
        H2O,
        SnapKV,
        PyramidKV,
        AdaKV,
        LookM,
        MadaKV,
        FlowMM,
        AccKV,
        PureKV,
    )
}


@dataclass(frozen=True)
class ParameterSpec:
    """One hyperparameter: ``type`` is ``"int"``, ``"float"``, ``"bool"``, ``"str"`` or, for the
    budget, ``"float|int"`` (fraction in (0, 1] or token count >= 1)."""

    name: str
    type: str
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PolicySpec:
    """A policy's name, one-line summary, parameters and input requirements."""

    name: str
    summary: str
    parameters: tuple[ParameterSpec, ...]
    needs_attention_weights: bool
    required_modalities: tuple[str, ...]
    needs_non_text: bool


def _type_name(kind: Any) -> str:
    if kind in (int, float, bool, str):
        return kind.__name__
    return "float|int"


def get_policy_spec(name: str) -> PolicySpec:
    """Spec of one registered policy (``ValueError`` for an unknown ``name``)."""
    cls = _lookup(name)
    hints = typing.get_type_hints(cls)
    params = []
    for f in fields(cls):
        if f.name.startswith("_"):
            continue
        meta = f.metadata
        params.append(
            ParameterSpec(
                name=f.name,
                type=_type_name(hints[f.name]),
                default=None if f.default is MISSING else f.default,
                description=meta.get("help", ""),
                minimum=meta.get("minimum"),
                maximum=meta.get("maximum"),
                exclusive_minimum=bool(meta.get("exclusive_minimum")),
                choices=meta.get("choices"),
            )
        )
    return PolicySpec(
        name=cls.name,
        summary=cls.summary,
        parameters=tuple(params),
        needs_attention_weights=bool(cls.needs_attention_weights),
        required_modalities=tuple(m.label for m in cls.required_modalities),
        needs_non_text=bool(cls.needs_non_text),
    )


def list_policies() -> list[PolicySpec]:
    """Specs of every registered policy, in registry order."""
    return [get_policy_spec(name) for name in POLICIES]


def _lookup(name: str) -> type[Policy]:
    if not isinstance(name, str) or name not in POLICIES:
        raise ValueError(f"name: unknown policy {name!r}; known: {', '.join(POLICIES)}")
    return POLICIES[name]


def make_policy(name: str, budget: float | int = 0.2, **params: Any) -> Policy:
    """Build policy ``name`` with ``budget`` and hyperparameters ``params``.

    Raises:
        ValueError: unknown name, unknown parameter, wrong type or value out of range (the message
            names the argument).
    """
    cls = _lookup(name)
    validate_budget(budget)
    known = {f.name for f in fields(cls) if f.name != "budget"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(
            f"{unknown[0]}: unknown parameter of policy {name!r}; known: {', '.join(sorted(known))}"
        )
    return cls(budget=budget, **params)
