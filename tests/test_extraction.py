from __future__ import annotations

import hashlib
import os
import re
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from app.errors import ArtifactError
from app.services.extraction import (
    ExtractedArtifact,
    ExtractionLimits,
    extract_artifact,
    member_path,
)
from app.settings import ModelsSettings
from tests.zips import (
    entry,
    patch_header,
    reverse_central_directory,
    share_local_header,
    write_zip,
)

MIB = 1 << 20
LIMITS = ExtractionLimits(max_members=100, max_total_bytes=200 * MIB, max_compression_ratio=200)
GOOD = ("good/first.onnx", b"written before the bad member is reached")


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    return tmp_path / "staging"


def refused(archive: Path, staging: Path, match: str, limits: ExtractionLimits = LIMITS) -> str:
    """Extract, expect an ArtifactError matching ``match``, and check nothing was left behind."""
    with pytest.raises(ArtifactError, match=match) as caught:
        extract_artifact(archive, staging, limits)
    assert list(staging.iterdir()) == []
    return str(caught.value)


def test_limits_come_from_models_settings():
    settings = ModelsSettings(max_members=7, max_uncompressed_mb=1.5, max_compression_ratio=50)

    assert ExtractionLimits.from_settings(settings) == ExtractionLimits(
        max_members=7, max_total_bytes=1572864, max_compression_ratio=50
    )


def test_extracts_used_members_keeping_their_folders(tmp_path, staging, logs):
    members = {
        "rl/cvar_ppo_agent.onnx": b"rl model",
        "rl/metadata.json": b"{}",
        "rl/scaler.pkl": b"pickled, never unpickled",
        "unified_brain.onnx": b"brain",
        "Upper.ONNX": b"suffixes compare case-insensitively",
    }
    archive = write_zip(tmp_path / "a.zip", [(entry("rl/", mode=0o040755), b""), *members.items()])

    extracted = extract_artifact(archive, staging, LIMITS)

    assert extracted == ExtractedArtifact(
        root=staging,
        files=tuple(sorted(PurePosixPath(name) for name in members)),
        ignored=(),
        sha256={
            PurePosixPath(name): hashlib.sha256(data).hexdigest() for name, data in members.items()
        },
    )
    for name, data in members.items():
        assert (staging / name).read_bytes() == data
    assert f"🌐 [CLOUD-SYNC] Model extracted: {staging / 'rl/cvar_ppo_agent.onnx'}" in logs
    assert sum("Model extracted" in line for line in logs) == 3


def test_ignores_other_members_with_a_warning(tmp_path, staging, logs):
    archive = write_zip(
        tmp_path / "a.zip",
        [("model.onnx", b"m"), ("README.md", b"# hi"), ("logs/train.txt", b"loss")],
    )

    extracted = extract_artifact(archive, staging, LIMITS)

    assert extracted.files == (PurePosixPath("model.onnx"),)
    assert extracted.ignored == ("README.md", "logs/train.txt")
    assert sorted(p.name for p in staging.rglob("*")) == ["model.onnx"]
    assert "⚠️ [CLOUD-SYNC] Ignoring artifact member README.md: not .onnx/.json/.pkl" in logs


def test_creates_a_missing_destination(tmp_path):
    archive = write_zip(tmp_path / "a.zip", [("m.onnx", b"m")])

    extract_artifact(archive, tmp_path / "new" / "staging", LIMITS)

    assert (tmp_path / "new" / "staging" / "m.onnx").read_bytes() == b"m"


def test_refuses_a_destination_that_is_not_empty(tmp_path, staging):
    archive = write_zip(tmp_path / "a.zip", [("m.onnx", b"m")])
    staging.mkdir()
    (staging / "someone_elses.onnx").write_bytes(b"keep")

    with pytest.raises(ValueError, match="not empty"):
        extract_artifact(archive, staging, LIMITS)

    assert [p.name for p in staging.iterdir()] == ["someone_elses.onnx"]


def test_member_paths_are_normalised():
    assert member_path("./rl//model.onnx") == PurePosixPath("rl/model.onnx")
    assert member_path("rl/") == PurePosixPath("rl")


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("/etc/model.onnx", "absolute path"),
        ("C:/models/model.onnx", "drive letter"),
        ("c:model.onnx", "drive letter"),
        ("rl\\model.onnx", "backslash"),
        ("../model.onnx", "'..'"),
        ("rl/../../model.onnx", "'..'"),
        ("./", "empty path"),
    ],
)
def test_refuses_member_names_that_escape(tmp_path, staging, name, rule):
    archive = write_zip(tmp_path / "a.zip", [GOOD, (entry(name), b"x")])

    message = refused(archive, staging, re.escape(rule))

    assert repr(name) in message


def test_refuses_a_nul_byte_in_a_name(tmp_path, staging):
    archive = write_zip(tmp_path / "a.zip", [("model.onnx#.txt", b"x")])
    archive.write_bytes(archive.read_bytes().replace(b"model.onnx#.txt", b"model.onnx\0.txt"))

    refused(archive, staging, "NUL byte")


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        (0o120777, "a symlink"),
        (0o010644, "a FIFO"),
        (0o020644, "a character device"),
        (0o060644, "a block device"),
        (0o140755, "a socket"),
        (0o040755, "a directory"),
    ],
)
def test_refuses_members_that_are_not_regular_files(tmp_path, staging, mode, kind):
    hostile = entry("model.onnx", mode=mode)
    archive = write_zip(tmp_path / "a.zip", [GOOD, (hostile, b"/etc/passwd")])

    message = refused(archive, staging, f"it is {kind}, not a regular file")

    assert "'model.onnx'" in message


def test_refuses_a_symlink_even_among_ignored_members(tmp_path, staging):
    archive = write_zip(tmp_path / "a.zip", [GOOD, (entry("link", mode=0o120777), b"/")])

    refused(archive, staging, "a symlink")


def test_accepts_regular_file_modes_and_windows_zips(tmp_path, staging):
    archive = write_zip(
        tmp_path / "a.zip",
        [(entry("unix.onnx", mode=0o100644), b"u"), (entry("windows.onnx"), b"w")],
    )

    extracted = extract_artifact(archive, staging, LIMITS)

    assert len(extracted.files) == 2


@pytest.mark.parametrize(
    "names",
    [
        ["model.onnx", "model.onnx"],
        ["rl/model.onnx", "rl//model.onnx"],
        ["./model.onnx", "model.onnx"],
        ["Model.onnx", "model.onnx"],
        ["caf\u00e9.onnx", "cafe\u0301.onnx"],
        ["rl/a.onnx", "RL/b.onnx"],
        ["rl", "rl/a.onnx"],
        ["rl/a.onnx", "rl"],
    ],
)
def test_refuses_names_that_collide(tmp_path, staging, names):
    archive = write_zip(tmp_path / "a.zip", [(name, b"x") for name in names])

    message = refused(archive, staging, "collides with")

    assert repr(names[1]) in message


def test_refuses_an_encrypted_member(tmp_path, staging):
    archive = write_zip(tmp_path / "a.zip", [GOOD, ("model.onnx", b"secret")])
    patch_header(archive, "model.onnx", set_flags=0x1)

    refused(archive, staging, "'model.onnx' refused: it is encrypted")


def test_refuses_an_unsupported_compression_method(tmp_path, staging):
    archive = write_zip(tmp_path / "a.zip", [GOOD, ("model.onnx", b"x")])
    patch_header(archive, "model.onnx", compress_type=9)  # deflate64: zipfile cannot read it

    refused(archive, staging, "unsupported compression method 9")


def test_refuses_too_many_members(tmp_path, staging):
    limits = ExtractionLimits(max_members=3, max_total_bytes=MIB, max_compression_ratio=200)
    at_limit = write_zip(tmp_path / "a.zip", [(f"m{i}.onnx", b"x") for i in range(3)])
    extract_artifact(at_limit, tmp_path / "other", limits)
    over = write_zip(
        tmp_path / "b.zip", [("m.onnx", b"x"), ("rl/", b""), *[(f"{i}.txt", b"") for i in range(2)]]
    )

    refused(over, staging, "4 members, more than the limit of 3", limits)


def test_refuses_an_artifact_over_the_total_size(tmp_path, staging):
    limits = ExtractionLimits(max_members=10, max_total_bytes=1000, max_compression_ratio=200)
    archive = write_zip(
        tmp_path / "a.zip", [("a.onnx", os.urandom(600)), ("b.onnx", os.urandom(400))]
    )
    extract_artifact(archive, staging, limits)  # exactly at the limit
    too_big = write_zip(
        tmp_path / "b.zip", [("a.onnx", os.urandom(600)), ("b.onnx", os.urandom(401))]
    )

    message = refused(too_big, tmp_path / "other", "more than the limit of 1000 bytes", limits)

    assert "'b.onnx'" in message


def test_refuses_a_zip_bomb_by_its_compression_ratio(tmp_path, staging):
    archive = write_zip(tmp_path / "a.zip", [GOOD, ("bomb.onnx", bytes(50 * MIB))])

    message = refused(
        archive, staging, r"compression ratio over \d+:1, more than the limit of 200:1"
    )

    assert "'bomb.onnx'" in message


def test_small_members_may_compress_well(tmp_path, staging):
    archive = write_zip(tmp_path / "a.zip", [("metadata.json", b" " * 500_000)])

    assert extract_artifact(archive, staging, LIMITS).files == (PurePosixPath("metadata.json"),)


def test_refuses_a_member_that_inflates_past_its_declared_size(tmp_path, staging):
    archive = write_zip(tmp_path / "a.zip", [GOOD, ("model.onnx", os.urandom(3 * MIB))])
    patch_header(archive, "model.onnx", file_size=1000)

    refused(archive, staging, "'model.onnx' refused: it inflates past its declared size of 1000")


def test_refuses_a_member_shorter_than_its_declared_size(tmp_path, staging):
    archive = write_zip(tmp_path / "a.zip", [GOOD, ("model.onnx", b"short")])
    patch_header(archive, "model.onnx", file_size=6)

    refused(archive, staging, "it inflates to 5 bytes, not its declared 6")


def test_refuses_a_truncated_zip(tmp_path, staging):
    archive = write_zip(tmp_path / "a.zip", [("model.onnx", os.urandom(10_000))])
    archive.write_bytes(archive.read_bytes()[:5_000])

    refused(archive, staging, "a.zip is not a readable zip")


def test_refuses_a_file_that_is_not_a_zip(tmp_path, staging):
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"<html>expired</html>")

    refused(archive, staging, "not a readable zip")


def test_refuses_member_data_that_fails_its_crc(tmp_path, staging):
    payload = b"A" * 100
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        writer.writestr(GOOD[0], GOOD[1])
        writer.writestr("model.onnx", payload)  # stored, so the bytes are findable
    data = archive.read_bytes()
    archive.write_bytes(data.replace(payload, b"B" + payload[1:]))

    refused(archive, staging, "'model.onnx' refused: corrupt data .*CRC")


def test_refuses_damaged_deflate_data(tmp_path, staging):
    archive = write_zip(tmp_path / "a.zip", [GOOD, ("model.onnx", b"hello " * 1000)])
    with zipfile.ZipFile(archive) as reader:
        info = reader.getinfo("model.onnx")
    data = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start : start + 8] = b"\xff" * 8
    archive.write_bytes(bytes(data))

    refused(archive, staging, "'model.onnx' refused: corrupt data")


# -- what the central directory alone gives away (issue 8) ------------------------------------


def test_limits_include_the_metadata_cap():
    settings = ModelsSettings(max_metadata_kb=2)

    assert ExtractionLimits.from_settings(settings).max_metadata_bytes == 2048


def test_refuses_a_metadata_json_over_its_cap_before_inflating_it(tmp_path, staging):
    limits = ExtractionLimits(
        max_members=10, max_total_bytes=200 * MIB, max_compression_ratio=10_000,
        max_metadata_bytes=1024,
    )  # fmt: skip
    at_cap = write_zip(tmp_path / "a.zip", [("rl/metadata.json", b" " * 1024)])
    extract_artifact(at_cap, tmp_path / "other", limits)
    over = write_zip(tmp_path / "b.zip", [GOOD, ("rl/METADATA.json", b" " * 1025)])

    refused(over, staging, "'rl/METADATA.json' refused: 1025 bytes, over the 1024-byte", limits)


def test_refuses_members_that_overlap_before_inflating_any(tmp_path, staging):
    # The "better zip bomb": one member's data runs over the next member's local header.
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as writer:  # stored: sizes are plain byte counts
        writer.writestr("a.onnx", os.urandom(3 * MIB))
        writer.writestr("b.onnx", os.urandom(1000))
    patch_header(archive, "a.onnx", compress_size=3 * MIB + 500)

    message = refused(archive, staging, "'a.onnx' refused: its data overlaps 'b.onnx'")

    assert "central directory" in message


def test_refuses_two_entries_sharing_one_member_before_inflating_either(tmp_path, staging):
    archive = write_zip(tmp_path / "a.zip", [("a.onnx", bytes(MIB)), ("b.onnx", bytes(MIB))])
    share_local_header(archive, "b.onnx", "a.onnx")

    refused(archive, staging, "'b.onnx' refused: it shares its data with 'a.onnx'")


def test_refuses_members_listed_out_of_their_order_in_the_file(tmp_path, staging):
    archive = write_zip(tmp_path / "a.zip", [("a.onnx", b"first"), ("b.onnx", b"second")])
    reverse_central_directory(archive)

    refused(archive, staging, "'a.onnx' refused: listed after 'b.onnx' but stored before it")


def test_refuses_a_member_reaching_into_the_central_directory(tmp_path, staging):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        writer.writestr("a.onnx", b"x" * 100)
    patch_header(archive, "a.onnx", compress_size=200)

    refused(archive, staging, "'a.onnx' refused: its data overlaps the central directory")


def test_refuses_a_name_component_longer_than_a_filesystem_allows(tmp_path, staging):
    archive = write_zip(tmp_path / "a.zip", [GOOD, ("rl/" + "a" * 251 + ".onnx", b"x")])

    refused(archive, staging, "a name part longer than 255 bytes")


def test_a_path_too_long_for_the_filesystem_is_refused_not_raised(tmp_path, staging):
    deep = "/".join(["d" * 200] * 25) + "/m.onnx"
    archive = write_zip(tmp_path / "a.zip", [GOOD, (deep, b"x")])

    message = refused(archive, staging, "its path is too long for the filesystem")

    assert len(message) < 400  # the name is cut short, not quoted whole
