"""FLAME / SMPL-X loaders on small synthetic files written in the official key layout."""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch
from scipy.spatial.transform import Rotation

from trillium.avatar.core import deform, icosphere, load_flame, load_smplx
from trillium.avatar.core.user_models import SMPLX_JOINT_NAMES

ROOT_PARENT = np.uint32(2**32 - 1)  # how the official kintree tables mark the root
# SMPL-X's kinematic tree (55 joints: body, jaw, eyes, 2 x 15 finger joints).
SMPLX_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
                 20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
                 21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53]  # fmt: skip


def synthetic_model(parents, subdivisions, components, seed, jaw):
    """Arrays in the FLAME / SMPL-X layout on an icosphere; joint ``jaw`` owns the lower-front vertices."""
    rng = np.random.default_rng(seed)
    unit, faces = icosphere(subdivisions, torch.float64)
    v_template = unit.numpy() * 0.1
    num_vertices, num_joints = len(v_template), len(parents)
    regressor = np.zeros((num_joints, num_vertices))
    for j in range(num_joints):
        chosen = rng.choice(num_vertices, size=3, replace=False)
        regressor[j, chosen] = rng.dirichlet(np.ones(3))
    weights = np.zeros((num_vertices, num_joints))
    others = [j for j in range(num_joints) if j != jaw]
    for v in range(num_vertices):
        chosen = rng.choice(others, size=3, replace=False)
        weights[v, chosen] = rng.dirichlet(np.ones(3))
    lower_front = (v_template[:, 1] < -0.03) & (v_template[:, 2] > 0.02)
    weights[lower_front] *= 0.2
    weights[lower_front, jaw] = 0.8
    kintree = np.stack(
        [np.array([ROOT_PARENT, *parents[1:]], dtype=np.uint32), np.arange(num_joints, dtype=np.uint32)]
    )
    return {
        "v_template": v_template,
        "shapedirs": rng.normal(scale=0.005, size=(num_vertices, 3, components)),
        "posedirs": rng.normal(scale=0.002, size=(num_vertices, 3, 9 * (num_joints - 1))),
        "J_regressor": regressor,
        "kintree_table": kintree,
        "weights": weights,
        "f": faces.numpy().astype(np.uint32),
    }


@pytest.fixture()
def flame_arrays():
    return synthetic_model([-1, 0, 1, 1, 1], subdivisions=1, components=10, seed=0, jaw=2)


@pytest.fixture()
def smplx_arrays():
    return synthetic_model(SMPLX_PARENTS, subdivisions=2, components=20, seed=1, jaw=22)


def reference_smpl(arrays, parents, num_shape, *, beta, psi, pose):
    """Slow per-joint / per-vertex SMPL-family forward pass (Loper et al. 2015) with scipy rotations."""
    shapedirs = arrays["shapedirs"]
    v_shaped = arrays["v_template"] + shapedirs[:, :, : len(beta)] @ beta
    joints = arrays["J_regressor"] @ v_shaped
    v = v_shaped + shapedirs[:, :, num_shape : num_shape + len(psi)] @ psi
    rotations = [Rotation.from_rotvec(p).as_matrix() for p in pose]
    feature = np.concatenate([(r - np.eye(3)).ravel() for r in rotations[1:]])
    v = v + arrays["posedirs"] @ feature
    world = []
    for j, parent in enumerate(parents):
        local = np.eye(4)
        local[:3, :3] = rotations[j]
        local[:3, 3] = joints[j] - (joints[parent] if parent >= 0 else 0.0)
        world.append(local if parent < 0 else world[parent] @ local)
    out = np.zeros_like(v)
    for i in range(len(v)):
        for j in range(len(parents)):
            rest_removed = world[j].copy()
            rest_removed[:3, 3] -= world[j][:3, :3] @ joints[j]
            out[i] += arrays["weights"][i, j] * (rest_removed[:3, :3] @ v[i] + rest_removed[:3, 3])
    return out


def test_flame_npz_matches_the_reference_forward_pass(tmp_path, flame_arrays):
    path = tmp_path / "flame.npz"
    np.savez(path, **flame_arrays)
    beta = np.array([0.5, -1.0, 0.3])
    rig = load_flame(path, shape=torch.tensor(beta), num_shape=6, num_expressions=3)
    assert rig.joint_names == ("root", "neck", "jaw", "left_eye", "right_eye") and rig.parents == (
        -1,
        0,
        1,
        1,
        1,
    )
    assert rig.blendshape_names == ("expression_000", "expression_001", "expression_002")
    shaped = flame_arrays["v_template"] + flame_arrays["shapedirs"][:, :, :3] @ beta
    torch.testing.assert_close(rig.template, torch.tensor(shaped, dtype=torch.float32))
    torch.testing.assert_close(
        rig.joints, torch.tensor(flame_arrays["J_regressor"] @ shaped, dtype=torch.float32)
    )
    psi = np.array([1.0, -0.5, 0.25])
    pose = np.random.default_rng(2).normal(scale=0.3, size=(5, 3))
    expected = reference_smpl(flame_arrays, rig.parents, 6, beta=beta, psi=psi, pose=pose)
    ours = deform(rig, torch.tensor(psi, dtype=torch.float32), torch.tensor(pose, dtype=torch.float32))
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float32), atol=2e-6, rtol=1e-5)


def test_flame_jaw_pose_moves_only_jaw_weighted_vertices(tmp_path, flame_arrays):
    del flame_arrays["posedirs"]  # optional key; correctives would move every vertex a little
    path = tmp_path / "flame.npz"
    np.savez(path, **flame_arrays)
    rig = load_flame(path, num_shape=6)
    assert rig.pose_correctives is None and len(rig.blendshape_names) == 4
    torch.testing.assert_close(deform(rig, rig.coefficients(), rig.pose()), rig.template)
    moved = (deform(rig, rig.coefficients(), rig.pose(jaw=(0.4, 0.0, 0.0))) - rig.template).norm(dim=-1)
    jaw_weight = rig.skin_weights[:, rig.joint_index("jaw")]
    assert float(moved[jaw_weight == 0].max()) < 1e-7
    assert bool((moved[jaw_weight > 0.5] > 1e-3).all())
    assert rig.joint_index("head") == rig.joint_index("neck")


def test_flame_pkl_with_sparse_regressor_equals_npz(tmp_path, flame_arrays):
    np.savez(tmp_path / "flame.npz", **flame_arrays)
    pickled = dict(flame_arrays, J_regressor=scipy.sparse.csc_matrix(flame_arrays["J_regressor"]))
    with (tmp_path / "flame.pkl").open("wb") as handle:
        pickle.dump(pickled, handle, protocol=2)
    from_npz, from_pkl = (
        load_flame(tmp_path / "flame.npz", num_shape=6),
        load_flame(tmp_path / "flame.pkl", num_shape=6),
    )
    for field in ("template", "joints", "blendshapes", "skin_weights", "pose_correctives", "faces"):
        torch.testing.assert_close(getattr(from_pkl, field), getattr(from_npz, field))


def test_chumpy_pickle_is_refused_with_conversion_hint(tmp_path, flame_arrays):
    package, module = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, value):
            self.value = value

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    module.Ch, package.ch = Ch, module
    sys.modules.update({"chumpy": package, "chumpy.ch": module})
    try:
        data = pickle.dumps(dict(flame_arrays, v_template=Ch(flame_arrays["v_template"])), protocol=2)
    finally:
        del sys.modules["chumpy.ch"], sys.modules["chumpy"]
    (tmp_path / "flame.pkl").write_bytes(data)
    with pytest.raises(ValueError, match=r"chumpy.*convert it to \.npz"):
        load_flame(tmp_path / "flame.pkl")


def test_pickle_with_other_globals_is_not_executed(tmp_path):
    marker = tmp_path / "ran"
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    (tmp_path / "evil.pkl").write_bytes(payload)
    with pytest.raises(ValueError, match=r"os\.system.*not unpickled"):
        load_flame(tmp_path / "evil.pkl")
    assert not marker.exists()


@pytest.mark.parametrize("missing", ["v_template", "kintree_table", "f", "weights"])
def test_missing_keys_are_named(tmp_path, flame_arrays, missing):
    del flame_arrays[missing]
    np.savez(tmp_path / "flame.npz", **flame_arrays)
    with pytest.raises(ValueError, match=f"missing key\\(s\\) '{missing}' for a FLAME model \\(found: "):
        load_flame(tmp_path / "flame.npz", num_shape=6)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("weights", lambda a: a["weights"][:, :3], "key 'weights'"),
        ("posedirs", lambda a: a["posedirs"][:, :, :9], "key 'posedirs'"),
        ("J_regressor", lambda a: a["J_regressor"].T, "key 'J_regressor'"),
        ("kintree_table", lambda a: a["kintree_table"][:, ::-1], "key 'kintree_table'"),
        ("f", lambda a: a["f"].astype(np.float32), "key 'f'"),
        ("weights", lambda a: a["weights"] * 3, "rows must sum to 1"),
        ("J_regressor", lambda a: np.array([None] * 5, dtype=object), "holds Python objects"),
    ],
)
def test_bad_arrays_raise_clear_errors(tmp_path, flame_arrays, key, value, message):
    flame_arrays[key] = value(flame_arrays)
    np.savez(tmp_path / "flame.npz", **flame_arrays)
    with pytest.raises(ValueError, match="flame.npz") as error:
        load_flame(tmp_path / "flame.npz", num_shape=6)
    assert message in str(error.value)


def test_too_few_components_and_bad_files(tmp_path, flame_arrays):
    np.savez(tmp_path / "flame.npz", **flame_arrays)
    with pytest.raises(ValueError, match="has 10 components; need num_shape \\(300\\)"):
        load_flame(tmp_path / "flame.npz")
    (tmp_path / "flame.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported FLAME file type"):
        load_flame(tmp_path / "flame.txt")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.npz"):
        load_flame(tmp_path / "broken.npz")
    with pytest.raises(FileNotFoundError):
        load_flame(tmp_path / "absent.npz")


def test_smplx_npz_body_pose_matches_the_reference(tmp_path, smplx_arrays):
    path = tmp_path / "SMPLX_NEUTRAL.npz"
    np.savez(path, **smplx_arrays)
    rig = load_smplx(path)  # 20 components: the older 10 shape + 10 expression layout
    assert rig.joint_names == SMPLX_JOINT_NAMES and len(rig.joint_names) == 55
    assert rig.parents == tuple(SMPLX_PARENTS) and len(rig.blendshape_names) == 10
    assert rig.joint_index("jaw") == 22 and rig.joint_index("head") == 15 and rig.joint_index("root") == 0
    body_pose = np.random.default_rng(3).normal(scale=0.2, size=(55, 3))
    psi = np.linspace(-1.0, 1.0, 10)
    expected = reference_smpl(smplx_arrays, rig.parents, 10, beta=np.zeros(0), psi=psi, pose=body_pose)
    pose = rig.pose(body_pose=torch.tensor(body_pose, dtype=torch.float32))
    ours = deform(rig, torch.tensor(psi, dtype=torch.float32), pose)
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float32), atol=2e-6, rtol=1e-5)


def test_smplx_jaw_and_errors(tmp_path, smplx_arrays):
    del smplx_arrays["posedirs"]
    np.savez(tmp_path / "smplx.npz", **smplx_arrays)
    rig = load_smplx(tmp_path / "smplx.npz")
    moved = (deform(rig, rig.coefficients(), rig.pose(jaw=(0.3, 0.0, 0.0))) - rig.template).norm(dim=-1)
    jaw_weight = rig.skin_weights[:, rig.joint_index("jaw")]
    assert float(moved[jaw_weight == 0].max()) < 1e-7 and bool((moved[jaw_weight > 0.5] > 1e-3).all())
    with pytest.raises(ValueError, match="body_pose: expected shape \\[55, 3\\]"):
        rig.pose(body_pose=torch.zeros(54, 3))
    with pytest.raises(ValueError, match="unknown joint 'tail'"):
        rig.pose(tail=(0.0, 0.0, 0.0))
    flame_like = dict(smplx_arrays, kintree_table=smplx_arrays["kintree_table"][:, :5])
    np.savez(tmp_path / "wrong.npz", **flame_like)
    with pytest.raises(ValueError, match="has 5 joints, this model has 55"):
        load_smplx(tmp_path / "wrong.npz")
