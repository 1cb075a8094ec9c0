from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

import pytest

from app.errors import ArtifactError, ChecksumMismatch
from app.services.extraction import ExtractedArtifact, ExtractionLimits, extract_artifact
from app.services.manifest import (
    ArtifactManifest,
    ModelFile,
    SlotAssignment,
    assign_slots,
    build_manifest,
    parse_metadata,
)
from tests.zips import write_zip

BRAIN = b"brain model bytes"
AGENT = b"rl agent model bytes"
SCALER = b"scaler pickle bytes"
SLOTS = {"unified_brain": "unified_brain.onnx", "cvar_ppo": "rl/cvar_ppo_agent.onnx"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extracted(tmp_path: Path, files: dict[str, bytes | dict | list]) -> ExtractedArtifact:
    """Write ``files`` (dicts and lists as JSON) as if extraction had produced them."""
    root = tmp_path / "staging"
    for name, content in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return ExtractedArtifact(root, tuple(sorted(PurePosixPath(name) for name in files)), ())


def model(path: str, *, slot: str | None = None) -> ModelFile:
    return ModelFile(PurePosixPath(path), sha(path.encode()), None, slot, None, None, None)


def manifest_of(*models: ModelFile) -> ArtifactManifest:
    return ArtifactManifest(Path("/staging"), models, ())


def test_without_metadata_models_are_hashed_and_undeclared(tmp_path):
    artifact = extracted(tmp_path, {"unified_brain.onnx": BRAIN, "scaler.pkl": SCALER})

    manifest = build_manifest(artifact, require_checksums=False)

    assert manifest == ArtifactManifest(
        root=artifact.root,
        models=(
            ModelFile(
                PurePosixPath("unified_brain.onnx"), sha(BRAIN), None, None, None, None, None
            ),
        ),
        other_files=(PurePosixPath("scaler.pkl"),),
    )


def test_sha256_checksum_verifies_the_folders_single_model(tmp_path):
    metadata = {
        "model_type": "cvar_ppo",
        "version": "2024.06.01",
        "timestamp": "2024-06-01T12:00:00Z",
        "slot": "cvar_ppo",
        "sha256_checksum": sha(AGENT).upper(),
        "metrics": {"sharpe": 1.4},
    }
    artifact = extracted(
        tmp_path,
        {
            "rl/cvar_ppo_agent.onnx": AGENT,
            "rl/metadata.json": metadata,
            "unified_brain.onnx": BRAIN,
        },
    )

    manifest = build_manifest(artifact, require_checksums=False)

    assert manifest.models == (
        ModelFile(
            path=PurePosixPath("rl/cvar_ppo_agent.onnx"),
            sha256=sha(AGENT),
            declared_sha256=sha(AGENT),
            slot="cvar_ppo",
            version="2024.06.01",
            model_type="cvar_ppo",
            timestamp="2024-06-01T12:00:00Z",
        ),
        ModelFile(PurePosixPath("unified_brain.onnx"), sha(BRAIN), None, None, None, None, None),
    )
    assert manifest.other_files == (PurePosixPath("rl/metadata.json"),)


def test_sha256_checksum_mismatch_names_file_expected_and_actual(tmp_path):
    wrong = sha(b"another model")
    artifact = extracted(
        tmp_path, {"rl/cvar_ppo_agent.onnx": AGENT, "rl/metadata.json": {"sha256_checksum": wrong}}
    )

    with pytest.raises(ChecksumMismatch) as caught:
        build_manifest(artifact, require_checksums=False)

    message = str(caught.value)
    assert "rl/cvar_ppo_agent.onnx" in message
    assert wrong in message
    assert sha(AGENT) in message


def test_files_map_verifies_every_listed_file(tmp_path):
    artifact = extracted(
        tmp_path,
        {
            "unified_brain.onnx": BRAIN,
            "scaler.pkl": SCALER,
            "rl/cvar_ppo_agent.onnx": AGENT,
            "metadata.json": {
                "version": "7",
                "files": {
                    "unified_brain.onnx": sha(BRAIN),
                    "scaler.pkl": sha(SCALER),
                    "rl/cvar_ppo_agent.onnx": sha(AGENT),
                },
            },
        },
    )

    manifest = build_manifest(artifact, require_checksums=True)

    declared = {m.path.name: (m.declared_sha256, m.version) for m in manifest.models}
    # Descriptive keys describe the metadata's own folder; checksums may reach below it.
    assert declared == {
        "unified_brain.onnx": (sha(BRAIN), "7"),
        "cvar_ppo_agent.onnx": (sha(AGENT), None),
    }


def test_files_map_mismatch_on_a_pickle_rejects(tmp_path):
    listed = {"unified_brain.onnx": sha(BRAIN), "scaler.pkl": sha(b"other")}
    artifact = extracted(
        tmp_path,
        {"unified_brain.onnx": BRAIN, "scaler.pkl": SCALER, "metadata.json": {"files": listed}},
    )

    with pytest.raises(ChecksumMismatch, match=r"^scaler\.pkl: metadata\.json declares"):
        build_manifest(artifact, require_checksums=False)


def test_both_forms_must_agree(tmp_path):
    metadata = {"sha256_checksum": sha(BRAIN), "files": {"unified_brain.onnx": sha(b"x")}}
    artifact = extracted(tmp_path, {"unified_brain.onnx": BRAIN, "metadata.json": metadata})

    with pytest.raises(ChecksumMismatch, match=r"unified_brain\.onnx"):
        build_manifest(artifact, require_checksums=False)


def test_a_listed_file_that_is_missing_rejects(tmp_path):
    metadata = {"files": {"unified_brain.onnx": sha(BRAIN), "notes.txt": sha(b"n")}}
    artifact = extracted(tmp_path, {"unified_brain.onnx": BRAIN, "metadata.json": metadata})

    with pytest.raises(ArtifactError, match=r"metadata\.json lists notes\.txt, which the artifact"):
        build_manifest(artifact, require_checksums=False)


@pytest.mark.parametrize("name", ["../unified_brain.onnx", "/unified_brain.onnx", "a\\b.onnx", ""])
def test_a_listed_name_outside_its_folder_rejects(tmp_path, name):
    metadata = {"files": {name: sha(BRAIN)}}
    artifact = extracted(tmp_path, {"rl/x.onnx": BRAIN, "rl/metadata.json": metadata})

    with pytest.raises(ArtifactError, match="is not a path inside its folder"):
        build_manifest(artifact, require_checksums=False)


def test_sha256_checksum_with_several_models_is_ambiguous(tmp_path):
    artifact = extracted(
        tmp_path,
        {"a.onnx": BRAIN, "b.onnx": AGENT, "metadata.json": {"sha256_checksum": sha(BRAIN)}},
    )

    with pytest.raises(ArtifactError, match=r"folder has 2 \(a.onnx, b.onnx\)"):
        build_manifest(artifact, require_checksums=False)


def test_sha256_checksum_without_a_model_rejects(tmp_path):
    artifact = extracted(
        tmp_path, {"a.onnx": BRAIN, "rl/metadata.json": {"sha256_checksum": sha(BRAIN)}}
    )

    with pytest.raises(ArtifactError, match=r"folder has 0 \(none\)"):
        build_manifest(artifact, require_checksums=False)


def test_require_checksums_rejects_an_undeclared_model(tmp_path):
    artifact = extracted(
        tmp_path,
        {
            "unified_brain.onnx": BRAIN,
            "rl/cvar_ppo_agent.onnx": AGENT,
            "rl/metadata.json": {"sha256_checksum": sha(AGENT)},
        },
    )
    build_manifest(artifact, require_checksums=False)

    with pytest.raises(ArtifactError, match=r"SHA-256 for: unified_brain\.onnx$"):
        build_manifest(artifact, require_checksums=True)


def test_metadata_name_is_matched_in_any_case(tmp_path):
    metadata = {"sha256_checksum": sha(b"wrong")}
    artifact = extracted(tmp_path, {"unified_brain.onnx": BRAIN, "Metadata.JSON": metadata})

    with pytest.raises(ChecksumMismatch):
        build_manifest(artifact, require_checksums=False)


def test_null_values_count_as_absent(tmp_path):
    metadata = {"version": None, "slot": None, "sha256_checksum": None, "files": None}
    artifact = extracted(tmp_path, {"unified_brain.onnx": BRAIN, "metadata.json": metadata})

    (found,) = build_manifest(artifact, require_checksums=False).models

    assert (found.version, found.slot, found.declared_sha256) == (None, None, None)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "is not valid JSON"),
        (b"\xff\xfe", "is not valid JSON"),
        ([], "must hold a JSON object, got list"),
        ({"version": 3}, "'version' must be a non-empty string, got 3"),
        ({"slot": ""}, "'slot' must be a non-empty string"),
        ({"model_type": ["ppo"]}, "'model_type' must be a non-empty string"),
        ({"timestamp": 1717243200}, "'timestamp' must be a non-empty string"),
        ({"sha256_checksum": "abc"}, "'sha256_checksum' must be a hex SHA-256"),
        ({"sha256_checksum": "sha256:" + sha(BRAIN)}, "must be a hex SHA-256"),
        ({"files": [sha(BRAIN)]}, "'files' must be an object"),
        ({"files": {"unified_brain.onnx": 1}}, "'files'\\['unified_brain.onnx'\\] must be a hex"),
    ],
)
def test_malformed_metadata_rejects_naming_the_file(tmp_path, content, problem):
    artifact = extracted(tmp_path, {"rl/unified_brain.onnx": BRAIN, "rl/metadata.json": content})

    with pytest.raises(ArtifactError, match=r"^rl/metadata\.json.*" + problem):
        build_manifest(artifact, require_checksums=False)


def test_slots_are_assigned_by_metadata_then_by_path():
    by_metadata = model("exported/agent_v7.onnx", slot="cvar_ppo")
    by_path = model("unified_brain.onnx")
    spare = model("experiments/candidate.onnx")

    assignment = assign_slots(manifest_of(by_metadata, by_path, spare), SLOTS)

    assert assignment == SlotAssignment(
        by_slot={"cvar_ppo": by_metadata, "unified_brain": by_path}, unassigned=(spare,)
    )


def test_the_only_model_fills_the_only_slot():
    only = model("model.onnx")

    assignment = assign_slots(manifest_of(only), {"unified_brain": "unified_brain.onnx"})

    assert assignment == SlotAssignment({"unified_brain": only}, ())


@pytest.mark.parametrize(
    ("models", "slots"),
    [
        ((model("a.onnx"), model("b.onnx")), {"unified_brain": "unified_brain.onnx"}),
        ((model("model.onnx"),), SLOTS),
        ((), {"unified_brain": "unified_brain.onnx"}),
    ],
)
def test_no_model_for_any_slot_rejects(models, slots):
    with pytest.raises(ArtifactError, match=r"^artifact has no model for any configured slot: "):
        assign_slots(manifest_of(*models), slots)


def test_an_unknown_slot_name_rejects():
    with pytest.raises(ArtifactError, match="'brain_v2', which is not configured"):
        assign_slots(manifest_of(model("unified_brain.onnx", slot="brain_v2")), SLOTS)


def test_two_models_for_one_slot_reject():
    first, second = model("unified_brain.onnx"), model("new/brain.onnx", slot="unified_brain")

    with pytest.raises(ArtifactError, match="two models for slot 'unified_brain'"):
        assign_slots(manifest_of(first, second), SLOTS)


def test_a_real_artifact_from_zip_to_slots(tmp_path):
    metadata = {"slot": "cvar_ppo", "version": "v3", "sha256_checksum": sha(AGENT)}
    archive = write_zip(
        tmp_path / "trained-models.zip",
        [
            ("rl/cvar_ppo_agent.onnx", AGENT),
            ("rl/metadata.json", json.dumps(metadata).encode()),
            ("unified_brain.onnx", BRAIN),
            ("metadata.json", json.dumps({"files": {"unified_brain.onnx": sha(BRAIN)}}).encode()),
        ],
    )
    limits = ExtractionLimits(max_members=10, max_total_bytes=1 << 20, max_compression_ratio=200)
    artifact = extract_artifact(archive, tmp_path / "staging", limits)

    assignment = assign_slots(build_manifest(artifact, require_checksums=True), SLOTS)

    assert {slot: (m.path, m.version) for slot, m in assignment.by_slot.items()} == {
        "cvar_ppo": (PurePosixPath("rl/cvar_ppo_agent.onnx"), "v3"),
        "unified_brain": (PurePosixPath("unified_brain.onnx"), None),
    }


@pytest.mark.parametrize("depth", [65, 100_000])
def test_metadata_nested_too_deep_rejects_without_recursing(depth):
    raw = b'{"version": "v1", "deep": ' + b"[" * depth + b"]" * depth + b"}"

    with pytest.raises(ArtifactError, match=r"metadata.json is nested more than 64 deep"):
        parse_metadata(PurePosixPath("metadata.json"), raw)


def test_metadata_nesting_within_the_bound_and_brackets_in_strings_are_fine():
    raw = b'{"version": "[[[[{{{{\\"[", "deep": ' + b"[" * 63 + b"]" * 63 + b"}"

    assert parse_metadata(PurePosixPath("metadata.json"), raw).version == '[[[[{{{{"['


def test_text_fields_are_kept_with_their_control_characters_escaped():
    raw = json.dumps({"version": "v2\n\x1b[2J", "model_type": "brain\r"}).encode()

    metadata = parse_metadata(PurePosixPath("metadata.json"), raw)

    assert (metadata.version, metadata.model_type) == ("v2\\x0a\\x1b[2J", "brain\\x0d")
