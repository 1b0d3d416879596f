"""Compression policies over the wire: kvcompress's registry as ``PolicyInfo`` messages, and a
request's ``CompressionConfig`` turned into a policy (errors name the request field)."""

from __future__ import annotations

import re
from typing import Any

from trillium.common.v1 import values_pb2
from trillium.inference.service.sparse import sparse_prefill_parameters
from trillium.inference.v1 import inference_pb2
from trillium.kvcompress.registry import ParameterSpec, PolicySpec, list_policies, make_policy
from trillium.servicekit.errors import ValidationError
from trillium.servicekit.parameters import from_parameter, to_parameter

NO_COMPRESSION = ("", "none")
MODALITY_BY_LABEL = {  # kvcompress modality label -> wire enum
    "text": inference_pb2.MODALITY_TEXT,
    "image": inference_pb2.MODALITY_IMAGE,
    "video": inference_pb2.MODALITY_VIDEO,
    "audio": inference_pb2.MODALITY_AUDIO,
}
_TYPE = {
    "float": values_pb2.PARAMETER_TYPE_NUMBER,
    "float|int": values_pb2.PARAMETER_TYPE_NUMBER,
    "int": values_pb2.PARAMETER_TYPE_INTEGER,
    "bool": values_pb2.PARAMETER_TYPE_FLAG,
    "str": values_pb2.PARAMETER_TYPE_TEXT,
}
_PAPER = re.compile(r"\((arXiv [^)]+)\)")
MERGING_POLICIES = frozenset({"look_m", "flowmm", "acckv"})


def parameter_value(value: Any) -> values_pb2.ParameterValue:
    """A default value on the wire; ``None`` (no default) is an unset value."""
    return values_pb2.ParameterValue() if value is None else to_parameter(value)


def parameter_spec(spec: ParameterSpec) -> values_pb2.ParameterSpec:
    message = values_pb2.ParameterSpec(
        name=spec.name,
        type=_TYPE.get(spec.type, values_pb2.PARAMETER_TYPE_UNSPECIFIED),
        default_value=parameter_value(spec.default),
        description=spec.description,
        choices=list(spec.choices or ()),
    )
    if spec.minimum is not None:
        message.minimum = float(spec.minimum)
    if spec.maximum is not None:
        message.maximum = float(spec.maximum)
    return message


def policy_info(spec: PolicySpec) -> inference_pb2.PolicyInfo:
    paper = _PAPER.search(spec.summary)
    return inference_pb2.PolicyInfo(
        name=spec.name,
        description=_PAPER.sub("", spec.summary).strip(),
        paper=paper.group(1) if paper else "",
        parameters=[parameter_spec(p) for p in spec.parameters],
        modalities=[MODALITY_BY_LABEL[m] for m in spec.required_modalities if m in MODALITY_BY_LABEL],
        merges_tokens=spec.name in MERGING_POLICIES,
    )


def list_policies_response() -> inference_pb2.ListCompressionPoliciesResponse:
    """Every registered policy, and the sparse-prefill (ST-SpAttn) parameters a request may set."""
    return inference_pb2.ListCompressionPoliciesResponse(
        policies=[policy_info(s) for s in list_policies()],
        sparse_prefill_parameters=[parameter_spec(p) for p in sparse_prefill_parameters()],
    )


def budget_value(config: inference_pb2.CompressionConfig) -> float | int:
    kind = config.budget.WhichOneof("kind")
    if kind == "ratio":
        if not 0.0 < config.budget.ratio <= 1.0:
            raise ValidationError("compression.budget.ratio", f"must be in (0, 1], got {config.budget.ratio}")
        return float(config.budget.ratio)
    if kind == "tokens":
        if config.budget.tokens < 1:
            raise ValidationError("compression.budget.tokens", f"must be >= 1, got {config.budget.tokens}")
        return int(config.budget.tokens)
    raise ValidationError("compression.budget", "give a ratio in (0, 1] or a token count")


def policy_from_request(config: inference_pb2.CompressionConfig):
    """The policy a request asks for, or None for the full cache."""
    if config.policy in NO_COMPRESSION:
        return None
    params = {
        name: from_parameter(value, f"compression.parameters[{name!r}]")
        for name, value in config.parameters.items()
    }
    budget = budget_value(config)
    try:
        return make_policy(config.policy, budget=budget, **params)
    except ValueError as exc:
        # kvcompress names the argument first ("name: ...", "window: ..."): map it to the request field.
        argument, _, message = str(exc).partition(": ")
        field = {"name": "compression.policy", "budget": "compression.budget"}.get(
            argument, f"compression.parameters[{argument!r}]" if argument in params else "compression"
        )
        raise ValidationError(field, message or str(exc)) from None
