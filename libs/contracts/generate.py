"""Regenerate the checked-in Python code for every proto under ``protos/``.

Usage: ``python libs/contracts/generate.py [--out DIR]`` (``make protos`` runs it).

Protos are laid out by package path (``protos/trillium/<area>/v1/*.proto``), so generated modules
import each other as ``trillium.<area>.v1.<name>_pb2`` with no rewriting. The generator is the pinned
``grpcio-tools`` (its bundled libprotoc) plus mypy-protobuf's gRPC stub plugin; the drift test runs
this script into a temporary directory and compares byte for byte with the checked-in files.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "protos"
DEFAULT_OUT = REPO_ROOT / "libs" / "contracts" / "src"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.glob("trillium/**/*.proto"))


def generated_files(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("trillium/**/*") if p.name.endswith(GENERATED_SUFFIXES))


def mypy_grpc_plugin() -> Path:
    """mypy-protobuf's gRPC stub plugin, installed beside the running interpreter."""
    plugin = Path(sys.executable).parent / "protoc-gen-mypy_grpc"
    found = plugin if plugin.exists() else shutil.which("protoc-gen-mypy_grpc")
    if found is None:
        raise SystemExit("protoc-gen-mypy_grpc not found: install mypy-protobuf (make setup)")
    return Path(found)


def generate(out: Path) -> list[Path]:
    """Run protoc for every proto into ``out`` (stale generated files are removed first)."""
    from grpc_tools import protoc

    for stale in generated_files(out):
        stale.unlink()
    out.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        # Name the plugin explicitly instead of relying on (or changing) PATH.
        f"--plugin=protoc-gen-mypy_grpc={mypy_grpc_plugin()}",
        f"--mypy_grpc_out={out}",
        *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    return generated_files(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output root (default: %(default)s)")
    args = parser.parse_args()
    files = generate(args.out)
    print(f"generated {len(files)} files under {args.out}")


if __name__ == "__main__":
    main()
