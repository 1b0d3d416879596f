"""Asset round trip and every validation error."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from trillium.avatar.core import (
    AvatarAsset,
    BoundGaussians,
    TemplateRef,
    init_one_per_triangle,
    load_asset,
    procedural_head,
    save_asset,
)


def make_asset() -> AvatarAsset:
    rig = procedural_head(1)
    faces = rig.faces.shape[0]
    return AvatarAsset(
        template=TemplateRef("procedural-head-s1", rig.template.shape[0], faces),
        gaussians=init_one_per_triangle(faces, generator=torch.Generator().manual_seed(0)),
        template_vertices=rig.template,
        template_faces=rig.faces,
        blendshape_names=rig.blendshape_names,
        blendshapes=rig.blendshapes,
        networks={"deform": {"0.weight": torch.randn(4, 3), "0.bias": torch.zeros(4)}},
        extra={"source": "test"},
    )


def test_round_trip(tmp_path) -> None:
    asset = make_asset()
    path = tmp_path / "a.safetensors"
    save_asset(asset, path)
    loaded = load_asset(path)
    assert loaded.template == asset.template
    assert loaded.blendshape_names == asset.blendshape_names and loaded.extra == {"source": "test"}
    for name in vars(asset.gaussians):
        assert torch.equal(getattr(loaded.gaussians, name), getattr(asset.gaussians, name)), name
    assert torch.equal(loaded.template_vertices, asset.template_vertices)
    assert torch.equal(loaded.template_faces, asset.template_faces)
    assert torch.equal(loaded.blendshapes, asset.blendshapes)
    assert set(loaded.networks["deform"]) == {"0.weight", "0.bias"}
    assert torch.equal(loaded.networks["deform"]["0.weight"], asset.networks["deform"]["0.weight"])
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["format"] == "trillium-avatar" and meta["version"] == "1"
    assert json.loads(meta["avatar"])["template"]["name"] == "procedural-head-s1"


def rewrite(tmp_path, tensors_change=None, metadata_change=None):
    """Save a valid asset, then rewrite it with raw safetensors edits (bypassing save-time checks)."""
    path = tmp_path / "a.safetensors"
    save_asset(make_asset(), path)
    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 - not a dict
        metadata = dict(handle.metadata())
    for key, value in (tensors_change or {}).items():
        if value is None:
            tensors.pop(key)
        else:
            tensors[key] = value
    metadata.update(metadata_change or {})
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize(
    ("tensors_change", "metadata_change", "message"),
    [
        ({"gaussians.sh0": None}, None, "missing tensor 'gaussians.sh0'"),
        ({"gaussians.local_means": torch.zeros(80, 2)}, None, "'gaussians.local_means': expected shape"),
        ({"gaussians.opacity_logits": torch.full((80,), float("nan"))}, None, "NaN"),
        ({"gaussians.parents": torch.full((80,), 999)}, None, "outside the template"),
        ({"gaussians.parents": torch.zeros(80)}, None, "must be integer"),
        ({"blendshapes.offsets": None}, None, "missing tensor 'blendshapes.offsets'"),
        ({"blendshapes.offsets": torch.zeros(6, 10, 3)}, None, "'blendshapes.offsets': expected shape"),
        (None, {"version": "2"}, "version"),
        (None, {"format": "something-else"}, "format"),
        (None, {"avatar": "{not json"}, "avatar metadata"),
        (None, {"avatar": json.dumps({"blendshape_names": []})}, "avatar metadata"),
    ],
)
def test_validation_errors_name_the_problem(tmp_path, tensors_change, metadata_change, message) -> None:
    path = rewrite(tmp_path, tensors_change, metadata_change)
    with pytest.raises(ValueError, match=message):
        load_asset(path)


def test_corrupt_and_truncated_files_raise_value_error(tmp_path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file at all")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_asset(garbage)
    path = tmp_path / "a.safetensors"
    save_asset(make_asset(), path)
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_asset(truncated)
    with pytest.raises(FileNotFoundError):
        load_asset(tmp_path / "missing.safetensors")


def test_save_refuses_invalid_assets(tmp_path) -> None:
    asset = make_asset()
    bad = BoundGaussians(
        **{**vars(asset.gaussians), "local_means": asset.gaussians.local_means * float("inf")}
    )
    with pytest.raises(ValueError, match="NaN or infinite"):
        save_asset(AvatarAsset(**{**vars(asset), "gaussians": bad}), tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="network name"):
        save_asset(AvatarAsset(**{**vars(asset), "networks": {"a.b": {}}}), tmp_path / "y.safetensors")
