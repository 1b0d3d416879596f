"""Checks on one client update before it may reach a strategy: a bad update is dropped, never aggregated.

Each check raises :class:`UpdateRejectedError` with a reason that names the offending field (the reason
travels back as ``PushUpdateResponse.reason`` and into the coordinator's log).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from trillium.federated.core.strategies.fedcfa import MEAN_X, MEAN_Y, FedCFA
from trillium.federated.core.strategies.scaffold import DELTA_C, Scaffold
from trillium.federated.core.types import ClientResult, ModelState, TensorMap
from trillium.federated.service.wire import UPDATE_EXTRAS, UPDATE_WEIGHTS


class UpdateRejectedError(Exception):
    """An update that is dropped; ``result`` is the metric label (``rejected`` or ``late``)."""

    def __init__(self, reason: str, result: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = result


def _check_finite(name: str, tensors: Mapping[str, torch.Tensor]) -> None:
    for key, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise UpdateRejectedError(f"{name}[{key!r}]: dtype {tensor.dtype} is not a float type")
        if not bool(torch.isfinite(tensor).all()):
            raise UpdateRejectedError(f"{name}[{key!r}]: contains NaN or Inf")


def check_weights(weights: TensorMap, global_weights: ModelState) -> ModelState:
    """Same names, shapes and dtypes as the global model, every value finite; returns them in model order."""
    missing = sorted(set(global_weights) - set(weights))
    unexpected = sorted(set(weights) - set(global_weights))
    if missing or unexpected:
        raise UpdateRejectedError(f"payloads.{UPDATE_WEIGHTS}: missing {missing}, unexpected {unexpected}")
    for name, reference in global_weights.items():
        got = weights[name]
        if tuple(got.shape) != tuple(reference.shape):
            raise UpdateRejectedError(
                f"payloads.{UPDATE_WEIGHTS}[{name!r}]: shape {list(got.shape)}, "
                f"expected {list(reference.shape)}"
            )
        if got.dtype != reference.dtype:
            raise UpdateRejectedError(
                f"payloads.{UPDATE_WEIGHTS}[{name!r}]: dtype {got.dtype}, expected {reference.dtype}"
            )
    _check_finite(f"payloads.{UPDATE_WEIGHTS}", weights)
    return ModelState((name, weights[name]) for name in global_weights)


def expected_extra_shapes(
    strategy: str, global_weights: ModelState, input_shape: tuple[int, ...], num_classes: int
) -> dict[str, tuple[int | None, ...]]:
    """Shapes of the extras ``strategy``'s client uploads (``None`` = any size, shared by its group).

    SCAFFOLD: ``delta_c/<param>`` per parameter; FedCFA: ``mean_x: [M, *input]``, ``mean_y: [M, C]``.
    """
    if strategy == Scaffold.name:
        return {DELTA_C + name: tuple(t.shape) for name, t in global_weights.items()}
    if strategy == FedCFA.name:
        return {MEAN_X: (None, *input_shape), MEAN_Y: (None, num_classes)}
    return {}


def check_extras(
    extras: TensorMap, expected: Mapping[str, tuple[int | None, ...]], payload: str = UPDATE_EXTRAS
) -> TensorMap:
    """Exactly the expected names, matching shapes (free dims agree with each other), finite values."""
    if set(extras) != set(expected):
        raise UpdateRejectedError(f"payloads.{payload}: got {sorted(extras)}, expected {sorted(expected)}")
    free_sizes: set[int] = set()
    for name, shape in expected.items():
        got = tuple(extras[name].shape)
        if len(got) != len(shape) or any(e is not None and e != g for e, g in zip(shape, got, strict=True)):
            raise UpdateRejectedError(
                f"payloads.{payload}[{name!r}]: shape {list(got)}, expected {list(shape)}"
            )
        free_sizes |= {g for e, g in zip(shape, got, strict=True) if e is None}
    if len(free_sizes) > 1 or 0 in free_sizes:
        raise UpdateRejectedError(
            f"payloads.{payload}: leading sizes {sorted(free_sizes)} must agree and be > 0"
        )
    _check_finite(f"payloads.{payload}", extras)
    return extras


def check_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    for key, value in metrics.items():
        if not math.isfinite(value):
            raise UpdateRejectedError(f"header.metrics[{key!r}]: {value} is not finite")
    return dict(metrics)


def build_result(
    payloads: Mapping[str, TensorMap],
    num_examples: int,
    metrics: Mapping[str, float],
    global_weights: ModelState,
    expected_extras: Mapping[str, tuple[int | None, ...]],
    *,
    extras_payload: str = UPDATE_EXTRAS,
) -> ClientResult:
    """A checked :class:`ClientResult` from the received payloads, or :class:`UpdateRejectedError`."""
    if num_examples < 1:
        raise UpdateRejectedError(f"header.num_examples: must be >= 1, got {num_examples}")
    unknown = sorted(set(payloads) - {UPDATE_WEIGHTS, extras_payload})
    if unknown:
        raise UpdateRejectedError(f"header.payloads: unknown payload names {unknown}")
    if UPDATE_WEIGHTS not in payloads:
        raise UpdateRejectedError(f"header.payloads: the {UPDATE_WEIGHTS!r} payload is missing")
    weights = check_weights(payloads[UPDATE_WEIGHTS], global_weights)
    extras = check_extras(payloads.get(extras_payload, {}), expected_extras, extras_payload)
    return ClientResult(weights, num_examples, check_metrics(metrics), extras)
