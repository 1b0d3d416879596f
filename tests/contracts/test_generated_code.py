"""The checked-in generated code matches protos/, and the declared version floors match the generator."""

from __future__ import annotations

import importlib
import importlib.util
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = REPO / "libs" / "contracts"


def load_generator():
    spec = importlib.util.spec_from_file_location("contracts_generate", CONTRACTS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_code_is_up_to_date(tmp_path):
    generator = load_generator()
    fresh = generator.generate(tmp_path)
    checked_in = generator.generated_files(CONTRACTS / "src")
    rel = sorted(str(p.relative_to(tmp_path)) for p in fresh)
    assert rel == sorted(str(p.relative_to(CONTRACTS / "src")) for p in checked_in), (
        "generated file set differs"
    )
    stale = [
        name for name in rel if (tmp_path / name).read_bytes() != (CONTRACTS / "src" / name).read_bytes()
    ]
    assert not stale, f"regenerate with `make protos`; stale: {stale}"


def test_every_proto_has_versioned_package_matching_its_path():
    for proto in (REPO / "protos").glob("trillium/**/*.proto"):
        parts = proto.relative_to(REPO / "protos").parts[:-1]
        assert f"package {'.'.join(parts)};" in proto.read_text(), proto
        assert parts[-1] == "v1"


def test_declared_floors_match_the_generator():
    project = tomllib.loads((CONTRACTS / "pyproject.toml").read_text())["project"]
    floors = {dep.split(">=")[0].strip(): dep for dep in project["dependencies"]}
    grpc_floor = Version(floors["grpcio"].split(">=")[1].split(",")[0])
    from grpc_tools import grpc_version

    assert grpc_floor == Version(grpc_version.VERSION), "grpcio floor must equal the grpcio-tools version"
    generated = (CONTRACTS / "src/trillium/inference/v1/inference_pb2_grpc.py").read_text()
    assert f"GRPC_GENERATED_VERSION = '{grpc_version.VERSION}'" in generated
    pb2 = (CONTRACTS / "src/trillium/inference/v1/inference_pb2.py").read_text()
    gencode = (
        [line for line in pb2.splitlines() if "Protobuf Python Version" in line][0].split(":")[-1].strip()
    )
    protobuf_floor = Version(floors["protobuf"].split(">=")[1].split(",")[0])
    # The runtime must be at least the gencode version the generated modules check at import.
    assert protobuf_floor == Version(gencode), f"protobuf floor {protobuf_floor} != gencode {gencode}"


@pytest.mark.parametrize("area", ["common", "inference", "avatar", "federated"])
def test_contract_modules_import(area):
    for module in (CONTRACTS / "src/trillium" / area / "v1").glob("*_pb2*.py"):
        importlib.import_module(f"trillium.{area}.v1.{module.stem}")
