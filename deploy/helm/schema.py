"""Generate ``trillium/values.schema.json`` from ``trillium/values.yaml``.

Every object in values.yaml becomes a closed JSON-schema object (``additionalProperties: false``) so a
misspelt or stale value fails ``helm install`` instead of being silently ignored; leaf types follow the
defaults. Free-form maps (labels, env, resources) are listed in ``OPEN_MAPS``. ``--check`` fails when
the checked-in schema is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent / "trillium"
OPEN_MAPS = {"labels", "env", "resources", "requests", "limits"}
NUMBER_KEYS = {"count", "replicaCount", "minReplicas", "maxReplicas", "minAvailable"}


def schema_for(value: object, key: str = "") -> dict:
    if isinstance(value, dict):
        if key in OPEN_MAPS:
            return {"type": "object"}
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {k: schema_for(v, k) for k, v in value.items()},
        }
    if isinstance(value, list):
        return {"type": "array"}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer", "minimum": 0} if key in NUMBER_KEYS else {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    return {"type": "string"}


def render() -> str:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", **schema_for(values)}
    return json.dumps(schema, indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    path = CHART / "values.schema.json"
    if args.check:
        if not path.exists() or path.read_text() != render():
            print(f"{path} is stale: run `make helm-schema`", file=sys.stderr)
            return 1
        return 0
    path.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
