"""Regenerate ``actions-subset.json`` from an unpacked ``@octokit/openapi`` package.

Usage (from the repository root)::

    cd /tmp && npm pack @octokit/openapi && tar xzf octokit-openapi-*.tgz
    python tests/fakes/openapi/vendor_schemas.py /tmp/package

Keeps only the response schemas of the endpoints the fake serves, with every ``$ref`` inlined
and OpenAPI 3.0's ``nullable`` rewritten as plain JSON Schema, so ``jsonschema`` can use them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SPEC_FILE = "generated/api.github.com.json"
OUTPUT = Path(__file__).with_name("actions-subset.json")

# (path, status) of each response the fake serves, keyed by GitHub's operationId.
ENDPOINTS: dict[str, tuple[str, str]] = {
    "actions/list-workflow-runs-for-repo": ("/repos/{owner}/{repo}/actions/runs", "200"),
    "actions/list-workflow-runs": (
        "/repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs",
        "200",
    ),
    "actions/get-workflow-run": ("/repos/{owner}/{repo}/actions/runs/{run_id}", "200"),
    "actions/list-workflow-run-artifacts": (
        "/repos/{owner}/{repo}/actions/runs/{run_id}/artifacts",
        "200",
    ),
    "actions/get-artifact": ("/repos/{owner}/{repo}/actions/artifacts/{artifact_id}", "200"),
    "actions/download-artifact": (
        "/repos/{owner}/{repo}/actions/artifacts/{artifact_id}/{archive_format}",
        "410",
    ),
}
# Prose and samples: not needed to validate, and most of the file's size.
DROPPED_KEYS = frozenset(
    {"description", "example", "examples", "title", "x-github-breaking-changes"}
)


def _resolve(spec: dict[str, Any], node: Any) -> Any:
    """``node`` with every local ``$ref`` replaced by (a resolved copy of) its target."""
    if isinstance(node, list):
        return [_resolve(spec, item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return _resolve(spec, target)
    resolved: dict[str, Any] = {}
    # Property names are data, not keywords: a property called "description" is kept.
    for key, value in node.items():
        if key in DROPPED_KEYS:
            continue
        if key == "properties":
            resolved[key] = {name: _resolve(spec, child) for name, child in value.items()}
        else:
            resolved[key] = _resolve(spec, value)
    return _without_nullable(resolved)


def _without_nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI 3.0's ``nullable: true`` as JSON Schema (``type: [T, "null"]``)."""
    if not schema.pop("nullable", False):
        return schema
    if isinstance(schema.get("type"), str):
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
        return schema
    return {"anyOf": [schema, {"type": "null"}]}


def _response_schema(spec: dict[str, Any], path: str, status: str) -> dict[str, Any]:
    response = spec["paths"][path]["get"]["responses"][status]
    response = _resolve(spec, response)
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


def main(package_dir: Path) -> None:
    spec = json.loads((package_dir / SPEC_FILE).read_text(encoding="utf-8"))
    package = json.loads((package_dir / "package.json").read_text(encoding="utf-8"))
    subset = {
        "source": {
            "package": package["name"],
            "version": package["version"],
            "file": SPEC_FILE,
            "license": package["license"],
        },
        "responses": {
            operation: {status: _response_schema(spec, path, status)}
            for operation, (path, status) in ENDPOINTS.items()
        },
    }
    subset["responses"]["basic-error"] = {
        "401": _resolve(spec, spec["components"]["schemas"]["basic-error"])
    }
    OUTPUT.write_text(json.dumps(subset, indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
