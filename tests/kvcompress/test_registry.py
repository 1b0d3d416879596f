"""Registry: introspection for the gRPC service and clear errors for bad requests."""

from __future__ import annotations

import pytest

from trillium.kvcompress import Policy, SnapKV, get_policy_spec, list_policies, make_policy

EXPECTED = [
    "random",
    "streaming_llm",
    "h2o",
    "snapkv",
    "pyramidkv",
    "adakv",
    "look_m",
    "madakv",
    "flowmm",
    "acckv",
    "purekv",
]


def test_every_policy_is_listed_with_typed_parameters() -> None:
    specs = list_policies()
    assert [s.name for s in specs] == EXPECTED
    for spec in specs:
        assert spec.summary and ("arXiv" in spec.summary or spec.name == "random")  # the floor has no paper
        budget = spec.parameters[0]
        assert (budget.name, budget.type, budget.default) == ("budget", "float|int", 0.2)
        for p in spec.parameters:
            assert p.type in {"int", "float", "bool", "str", "float|int"} and p.description
        policy = make_policy(spec.name)
        assert isinstance(policy, Policy) and policy.name == spec.name
        for p in spec.parameters:
            assert getattr(policy, p.name) == p.default
    snap = get_policy_spec("snapkv")
    window = next(p for p in snap.parameters if p.name == "window")
    assert (window.type, window.default, window.minimum) == ("int", 32, 1)
    assert get_policy_spec("acckv").required_modalities == ("video", "audio")
    assert get_policy_spec("h2o").needs_attention_weights
    assert get_policy_spec("flowmm").needs_non_text
    scoring = next(p for p in get_policy_spec("acckv").parameters if p.name == "scoring")
    assert scoring.choices == ("full", "window") and scoring.default == "window"


def test_make_policy_builds_with_params() -> None:
    policy = make_policy("snapkv", budget=64, window=16, kernel=3)
    assert isinstance(policy, SnapKV) and (policy.budget, policy.window, policy.kernel) == (64, 16, 3)
    assert make_policy("flowmm", budget=0.2, theta=1).theta == 1.0  # int accepted for a float


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "nope"}, "name: unknown policy 'nope'"),
        ({"name": "snapkv", "budget": 0.0}, "budget"),
        ({"name": "snapkv", "budget": 1.5}, "budget"),
        ({"name": "snapkv", "budget": -2}, "budget"),
        ({"name": "snapkv", "budget": True}, "budget"),
        ({"name": "snapkv", "windw": 8}, "windw: unknown parameter"),
        ({"name": "snapkv", "window": 0}, "window must be >= 1"),
        ({"name": "snapkv", "window": 2.5}, "window must be an int"),
        ({"name": "snapkv", "kernel": 4}, "kernel must be odd"),
        ({"name": "flowmm", "theta": 1.5}, "theta must be <= 1.0"),
        ({"name": "madakv", "theta": 0.0}, "theta must be > 0.0"),
        ({"name": "acckv", "scoring": "fast"}, "scoring must be one of"),
        ({"name": "look_m", "merge": "yes"}, "merge must be a bool"),
    ],
)
def test_make_policy_rejects_bad_input_naming_the_argument(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        make_policy(**kwargs)
