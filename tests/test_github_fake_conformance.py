"""The fake GitHub answers as GitHub's own OpenAPI description says GitHub answers.

The schemas are a vendored subset of ``@octokit/openapi`` (see ``tests/fakes/openapi/NOTICE.md``).
Each response is checked twice: as published (every required property, every type), and with
undeclared properties forbidden, so that a misspelt field in the fake cannot hide.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jsonschema
import pytest

from tests.fakes.github import FakeGitHub, make_zip, running_fake_github

SUBSET = Path(__file__).parent / "fakes" / "openapi" / "actions-subset.json"
SCHEMAS: dict[str, Any] = json.loads(SUBSET.read_text(encoding="utf-8"))


def response_schema(operation: str, status: int) -> dict[str, Any]:
    schema: dict[str, Any] = SCHEMAS["responses"][operation][str(status)]
    return schema


def closed(schema: Any) -> Any:
    """A copy of ``schema`` in which every object with listed properties allows no others."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {
        key: {name: closed(child) for name, child in value.items()}
        if key == "properties"
        else closed(value)
        for key, value in schema.items()
    }
    if "properties" in result and "additionalProperties" not in result:
        result["additionalProperties"] = False
    return result


FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    # jsonschema checks date-time only with an optional package; GitHub writes ...T12:00:00Z.
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


@FORMATS.checks("uri")
def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return parts.scheme in {"http", "https"} and bool(parts.netloc)


def problems(instance: Any, operation: str, status: int) -> list[str]:
    """Every way ``instance`` breaks the schema, as published and closed."""
    schema = response_schema(operation, status)
    found = []
    for variant in (schema, closed(copy.deepcopy(schema))):
        validator = jsonschema.Draft7Validator(variant, format_checker=FORMATS)
        found += [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]
    return found


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with running_fake_github() as fake:
        workflow = fake.add_workflow("train.yml")
        run = fake.add_run(workflow)
        fake.add_artifact(run, "trained-model", make_zip({"unified_brain.onnx": b"onnx"}))
        fake.add_artifact(run, "legacy-model", digest=None)
        fake.add_artifact(run, "old-model", expired=True)
        fake.add_run(
            workflow,
            head_branch="feature",
            event="pull_request",
            head_repository="mallory/trading-models",
            run_attempt=2,
        )
        fake.add_run(workflow, status="in_progress", conclusion=None)
        yield fake


@pytest.fixture
async def get(github: FakeGitHub) -> AsyncIterator[Any]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {github.token}"}) as http:

        async def fetch(path: str, expected: int = 200) -> tuple[Any, aiohttp.ClientResponse]:
            async with http.get(github.api_url + path, allow_redirects=False) as response:
                assert response.status == expected
                body = await response.json() if response.content_length else None
                return body, response

        yield fetch


def repo(github: FakeGitHub) -> str:
    return f"/repos/{github.full_name}/actions"


@pytest.mark.parametrize(
    ("path", "operation"),
    [
        ("/runs", "actions/list-workflow-runs-for-repo"),
        ("/runs?per_page=1&page=2", "actions/list-workflow-runs-for-repo"),
        ("/workflows/train.yml/runs?status=success", "actions/list-workflow-runs"),
    ],
)
async def test_runs_listings_conform(github, get, path, operation):
    body, _ = await get(repo(github) + path)

    assert body["workflow_runs"]
    assert problems(body, operation, 200) == []


async def test_pages_link_to_each_other_with_absolute_urls(github, get):
    _, response = await get(f"{repo(github)}/runs?per_page=1&page=2")

    links = {rel: link["url"] for rel, link in response.links.items()}
    assert set(links) == {"prev", "next", "last", "first"}
    assert all(str(url).startswith(github.api_url) for url in links.values())
    assert links["last"].query["page"] == "3"
    assert response.headers["ETag"].startswith('"')


async def test_each_run_conforms_fork_and_rerun_included(github, get):
    for run in github.runs.values():
        body, _ = await get(f"{repo(github)}/runs/{run.id}")
        assert problems(body, "actions/get-workflow-run", 200) == []


async def test_artifacts_listing_and_each_artifact_conform(github, get):
    run = next(iter(github.runs.values()))
    body, _ = await get(f"{repo(github)}/runs/{run.id}/artifacts")
    assert len(body["artifacts"]) == 3
    assert problems(body, "actions/list-workflow-run-artifacts", 200) == []
    for artifact in github.artifacts.values():
        body, _ = await get(f"{repo(github)}/artifacts/{artifact.id}")
        assert problems(body, "actions/get-artifact", 200) == []


async def test_error_bodies_conform(github, get):
    expired = next(a for a in github.artifacts.values() if a.expired)
    gone, _ = await get(f"{repo(github)}/artifacts/{expired.id}/zip", expected=410)
    assert problems(gone, "actions/download-artifact", 410) == []
    github.revoke_token()
    refused, _ = await get(f"{repo(github)}/runs", expected=401)
    assert problems(refused, "basic-error", 401) == []
    assert refused["message"] == "Bad credentials"


async def test_a_download_is_a_redirect_with_a_location(github, get):
    artifact = next(a for a in github.artifacts.values() if not a.expired)
    body, response = await get(f"{repo(github)}/artifacts/{artifact.id}/zip", expected=302)
    assert body is None
    assert response.headers["Location"].startswith(github.blob.base_url)


async def test_the_check_catches_a_missing_or_mistyped_or_unknown_field(github, get):
    run = next(iter(github.runs.values()))
    body, _ = await get(f"{repo(github)}/runs/{run.id}")
    missing = {key: value for key, value in body.items() if key != "head_sha"}
    mistyped = {**body, "run_attempt": "1"}
    misspelt = {**body, "head_shaa": body["head_sha"]}
    bad_date = {**body, "created_at": "yesterday"}
    for broken in (missing, mistyped, misspelt, bad_date):
        assert problems(broken, "actions/get-workflow-run", 200) != []


def test_the_vendored_schemas_name_their_source_and_licence():
    source = SCHEMAS["source"]
    assert source["package"] == "@octokit/openapi"
    assert source["license"] == "MIT"
    notice = (SUBSET.parent / "NOTICE.md").read_text(encoding="utf-8")
    assert source["version"] in notice
    assert "MIT" in notice
