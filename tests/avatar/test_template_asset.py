"""Template file format: round trip of the procedural head and clear errors on bad files."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from trillium.avatar.core import deform, load_template, procedural_head, save_template, validate_rig


@pytest.fixture()
def saved(tmp_path):
    path = tmp_path / "head.safetensors"
    save_template(procedural_head(2), path, name="procedural", licence="Apache-2.0", provenance={"test": 1})
    return path


def read(path):
    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata())  # noqa: SIM118


def rewrite(path, tensors, metadata, tmp_path):
    out = tmp_path / "bad.safetensors"
    save_file(tensors, str(out), metadata=metadata)
    return out


def test_round_trip_matches_the_rig(saved):
    rig = procedural_head(2)
    loaded = load_template(saved)
    torch.testing.assert_close(loaded.template, rig.template)
    torch.testing.assert_close(loaded.blendshapes, rig.blendshapes)
    torch.testing.assert_close(loaded.skin_weights, rig.skin_weights)
    torch.testing.assert_close(loaded.joints, rig.joints)
    assert torch.equal(loaded.faces, rig.faces)
    assert (loaded.blendshape_names, loaded.joint_names, loaded.parents) == (
        rig.blendshape_names,
        rig.joint_names,
        rig.parents,
    )
    assert loaded.joint_roles == rig.joint_roles
    coeffs, pose = (
        rig.coefficients(jawOpen=0.7, eyeBlinkLeft=1.0),
        rig.pose(jaw=(0.2, 0.0, 0.0), head=(0, 0.3, 0)),
    )
    torch.testing.assert_close(deform(loaded, coeffs, pose), deform(rig, coeffs, pose))


def test_sparse_storage_keeps_only_nonzero_rows(saved):
    tensors, _ = read(saved)
    rig = procedural_head(2)
    nonzero = int((rig.blendshapes.abs().amax(-1) > 0).sum())
    assert tensors["blendshapes.offsets"].shape == (nonzero, 3)
    assert tensors["blendshapes.counts"].tolist() == (rig.blendshapes.abs().amax(-1) > 0).sum(-1).tolist()


def test_float16_offsets_are_accepted(saved, tmp_path):
    tensors, metadata = read(saved)
    tensors["blendshapes.offsets"] = tensors["blendshapes.offsets"].half()
    loaded = load_template(rewrite(saved, tensors, metadata, tmp_path))
    torch.testing.assert_close(loaded.blendshapes, procedural_head(2).blendshapes, atol=1e-5, rtol=1e-3)


def mutate_tensor(key, value):
    def apply(tensors, metadata):
        tensors[key] = value(tensors[key]) if callable(value) else value

    return apply


def mutate_info(key, value):
    def apply(tensors, metadata):
        info = json.loads(metadata["template"])
        info[key] = value
        metadata["template"] = json.dumps(info)

    return apply


def drop(key):
    def apply(tensors, metadata):
        del tensors[key]

    return apply


def set_header(key, value):
    def apply(tensors, metadata):
        metadata[key] = value

    return apply


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (set_header("format", "trillium-avatar"), "format"),
        (set_header("version", "2"), "version"),
        (set_header("template", "{not json"), "template metadata"),
        (mutate_info("joint_names", "neck"), "joint_names must be a list"),
        (drop("skin.weights"), "missing tensor 'skin.weights'"),
        (mutate_tensor("faces", lambda f: f + 10_000), "faces"),
        (mutate_tensor("faces", lambda f: f.float()), "'faces' must be integer"),
        (mutate_tensor("vertices", lambda v: v[:-1]), "'vertices': expected shape"),
        (mutate_tensor("vertices", lambda v: v.index_fill(0, torch.tensor([3]), float("nan"))), "NaN"),
        (mutate_tensor("blendshapes.vertex_ids", lambda i: i.flip(0)), "increase within each shape"),
        (mutate_tensor("blendshapes.vertex_ids", lambda i: i + 100_000), "outside"),
        (mutate_tensor("blendshapes.counts", lambda c: c + 1), "'blendshapes.vertex_ids': expected shape"),
        (mutate_tensor("skin.indices", lambda i: i + 5), "'skin.indices' indexes outside"),
        (mutate_tensor("skin.weights", lambda w: w * 2), "rows must sum to 1"),
        (mutate_info("parents", [1, -1]), "parents"),
        (mutate_info("joint_roles", {"jaw": "chin"}), "unknown joint 'chin'"),
        (mutate_info("joint_roles", {"tail": "jaw"}), "unknown role 'tail'"),
        (mutate_info("blendshape_names", ["jawOpen"] * 6), "duplicate"),
    ],
)
def test_bad_files_raise_clear_errors(saved, tmp_path, mutation, message):
    tensors, metadata = read(saved)
    mutation(tensors, metadata)
    bad = rewrite(saved, tensors, metadata, tmp_path)
    with pytest.raises(ValueError, match="bad.safetensors") as error:
        load_template(bad)
    assert message in str(error.value)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable safetensors template"):
        load_template(path)
    with pytest.raises(FileNotFoundError):
        load_template(tmp_path / "missing.safetensors")


def test_validate_rig_names_the_field():
    rig = procedural_head(1)
    with pytest.raises(ValueError, match="skin_weights"):
        validate_rig(replace(rig, skin_weights=rig.skin_weights[:, :1]))
    with pytest.raises(ValueError, match="blendshapes"):
        validate_rig(replace(rig, blendshapes=rig.blendshapes[:, :-1]))
    with pytest.raises(ValueError, match="pose_correctives"):
        validate_rig(replace(rig, pose_correctives=torch.zeros(3, len(rig.template), 3)))
