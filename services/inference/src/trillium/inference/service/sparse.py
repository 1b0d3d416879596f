"""Sparse prefill over the wire: ST-SpAttn (PureKV, arXiv 2510.25600) parameters listed and checked.

The mask and its attention live in ``trillium.kvcompress.sparse_prefill``; the service composes them
with the request's eviction policy exactly as the library does
(``ComposedPolicy(base=policy, prefill=STSparsePrefill(params))``, see :mod:`.runtime`).

* :func:`sparse_prefill_parameters` describes :class:`~trillium.kvcompress.sparse_prefill.STSparseParams`
  as registry ``ParameterSpec``s: names, types, defaults and choices from the dataclass, descriptions
  from its ``Attributes:`` docstring, bounds mirroring its ``__post_init__`` checks (plus a cap on
  ``block_size``, :data:`MAX_BLOCK_SIZE`: tiles are padded to full size). ``backend`` is not
  settable over the wire: the server keeps the library's ``auto`` (the gather backend on CPU).
* :func:`sparse_params_from_request` turns ``compression.sparse_prefill`` into ``STSparseParams`` (None
  when not enabled). Parameters are checked even when ``enabled`` is false, so a typo never hides;
  errors name ``compression.sparse_prefill.parameters.<name>``.
* :func:`prefill_density` is the ``prefill_attention_density`` of a prefill: the mean over decoder
  layers of the library's :meth:`SparsePrefillPlan.block_density` (kept causal tile pairs / all causal
  tile pairs, averaged over KV heads).
* A prompt without video tokens: ST-SpAttn keeps every causal tile of a query tile holding a
  non-video token (rule 1 of the library's mask), so its plan is dense causal attention. The service
  then runs the plain dense prefill (:func:`has_video`) and reports ``sparse_prefill=true`` with
  density 1.0 — the same attention without the cost of planning it.
"""

from __future__ import annotations

import inspect
import math
import typing
from dataclasses import fields
from typing import Any, Literal

from trillium.inference.v1 import inference_pb2
from trillium.kvcompress.layout import Modality, TokenLayout
from trillium.kvcompress.policies.base import Policy
from trillium.kvcompress.registry import ParameterSpec
from trillium.kvcompress.sparse_prefill import SparsePrefillPlan, STSparseParams
from trillium.servicekit.errors import ValidationError
from trillium.servicekit.parameters import Scalar, from_parameter_map

FIELD = "compression.sparse_prefill"
PARAMETERS_FIELD = f"{FIELD}.parameters"
SERVER_ONLY = frozenset({"backend"})
# Tiles are padded to ``block_size`` tokens, so a huge tile only costs memory: the server caps it.
MAX_BLOCK_SIZE = 4096
# Inclusive bounds, as checked by STSparseParams.__post_init__ (None = unbounded on that side), plus
# the server's block-size cap.
_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "block_size": (1, MAX_BLOCK_SIZE),
    "num_sink_tokens": (0, None),
    "local_frames": (0, None),
    "gamma": (0.0, 1.0),
}


def _descriptions(cls: type) -> dict[str, str]:
    """``{attribute: text}`` from a Google-style ``Attributes:`` docstring section (continuations joined)."""
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    found: dict[str, str] = {}
    inside, current = False, ""
    for line in lines:
        if line.strip() == "Attributes:":
            inside = True
            continue
        if not inside or not line.strip():
            continue
        if not line.startswith(" "):
            break
        head, sep, text = line.strip().partition(": ")
        if line.startswith("    ") and not line.startswith("     ") and sep and head.isidentifier():
            current = head
            found[current] = text.strip()
        elif current:
            found[current] += " " + line.strip()
    return found


def _type_and_choices(kind: Any) -> tuple[str, tuple[str, ...] | None]:
    if typing.get_origin(kind) is Literal:
        return "str", tuple(str(c) for c in typing.get_args(kind))
    return kind.__name__, None


def sparse_prefill_parameters() -> tuple[ParameterSpec, ...]:
    """The ``STSparseParams`` a client may set, in dataclass order (``backend`` excluded)."""
    hints = typing.get_type_hints(STSparseParams)
    text = _descriptions(STSparseParams)
    specs = []
    for f in fields(STSparseParams):
        if f.name in SERVER_ONLY:
            continue
        kind, choices = _type_and_choices(hints[f.name])
        low, high = _BOUNDS.get(f.name, (None, None))
        specs.append(
            ParameterSpec(
                name=f.name,
                type=kind,
                default=f.default,
                description=text.get(f.name, ""),
                minimum=low,
                maximum=high,
                choices=choices,
            )
        )
    return tuple(specs)


def _checked(spec: ParameterSpec, value: Scalar) -> Scalar:
    """``value`` coerced to the spec's type; a ``ValidationError`` naming the parameter otherwise."""
    where = f"{PARAMETERS_FIELD}.{spec.name}"
    if spec.type == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(where, f"must be an integer, got {value!r}")
    elif spec.type == "float":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValidationError(where, f"must be a finite number, got {value!r}")
        value = float(value)
    elif spec.type == "str":
        if not isinstance(value, str):
            raise ValidationError(where, f"must be text, got {value!r}")
        if spec.choices and value not in spec.choices:
            raise ValidationError(where, f"must be one of {list(spec.choices)}, got {value!r}")
        return value
    if spec.minimum is not None and value < spec.minimum:
        raise ValidationError(where, f"must be >= {spec.minimum}, got {value}")
    if spec.maximum is not None and value > spec.maximum:
        raise ValidationError(where, f"must be <= {spec.maximum}, got {value}")
    return value


def sparse_params_from_request(config: inference_pb2.SparsePrefill) -> STSparseParams | None:
    """``STSparseParams`` for an enabled ``compression.sparse_prefill``; None when it is off."""
    specs = {spec.name: spec for spec in sparse_prefill_parameters()}
    values = from_parameter_map(config.parameters, PARAMETERS_FIELD)
    for name in sorted(values):
        if name not in specs:
            why = "is chosen by the server" if name in SERVER_ONLY else "is not a sparse-prefill parameter"
            raise ValidationError(f"{PARAMETERS_FIELD}.{name}", f"{why}; known: {', '.join(specs)}")
    checked = {name: _checked(specs[name], value) for name, value in values.items()}
    if not config.enabled:
        return None
    try:
        return STSparseParams(**checked)
    except ValueError as exc:  # the library's own checks, should the bounds above drift from them
        name = str(exc).split(" ", 1)[0]
        raise ValidationError(f"{PARAMETERS_FIELD}.{name}" if name in specs else FIELD, str(exc)) from None


def check_policy_supports_sparse_prefill(policy: Policy | None, policy_name: str) -> None:
    """Policies scoring tokens with dense prefill attention weights (H2O) bypass the sparse attention."""
    if policy is not None and policy.needs_attention_weights:
        raise ValidationError(
            f"{FIELD}.enabled",
            f"policy {policy_name!r} needs the dense prefill attention weights; it cannot run with "
            "sparse prefill",
        )


def prefill_density(plans: list[SparsePrefillPlan]) -> float:
    """Mean over layers of the fraction of causal attention tiles computed (1.0 without plans)."""
    if not plans:
        return 1.0
    return sum(plan.block_density() for plan in plans) / len(plans)


def has_video(layout: TokenLayout) -> bool:
    """Whether ST-SpAttn can skip anything in this prompt (it only sparsifies video query tiles)."""
    return bool(layout.mask(Modality.VIDEO).any())
