"""Safe extraction of an artifact zip into a fresh staging folder.

A zip's headers say whatever its author wrote, so nothing in them is trusted for safety:

- Every member's name and file type are checked before anything is written (no absolute
  paths, drive letters, backslashes, ``..``, NUL bytes, symlinks, devices, duplicates, name
  parts longer than a filesystem allows).
- The central directory must describe members that follow each other in the file, each one's
  data ending before the next begins: overlapping members (the "better zip bomb", where many
  entries share one compressed kernel) are refused before anything is inflated.
- A ``metadata.json`` declaring more than ``max_metadata_bytes`` is refused from its header (and
  the inflation check below holds it to what it declared).
- Members ending in ``.onnx``, ``.json`` or ``.pkl`` (suffix compared case-insensitively, the
  name kept as written) are used; anything else is ignored with a warning and never read.
- Used members are read in chunks and the bytes actually produced are counted against the
  limits while they inflate; a member that inflates to more or less than its declared size is
  refused, as is any CRC or decompression error.
- On any refusal the staging folder is emptied again: nothing half-extracted is left behind.
  A full disk is not the artifact's fault: it raises ``InsufficientDiskSpace`` (tried again
  later), and leaves nothing behind either.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import os
import re
import shutil
import stat
import sys
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING

from loguru import logger

from app.errors import ArtifactError, ArtifactTooLarge, InsufficientDiskSpace
from app.fsutil import fsync_directory

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from app.settings import ModelsSettings

USED_SUFFIXES = frozenset({".onnx", ".json", ".pkl"})
MODEL_SUFFIX = ".onnx"
METADATA_NAME = "metadata.json"
DEFAULT_MAX_METADATA_BYTES = 1024 << 10
# NAME_MAX of every common filesystem (ext4, xfs, btrfs, tmpfs, NTFS in UTF-16 units, APFS).
MAX_NAME_PART_BYTES = 255
# A member this small cannot be a bomb; tiny JSON files often compress 100-1000x.
RATIO_GRACE_BYTES = 1 << 20
# What actions/upload-artifact and common zip tools write; anything else is refused.
SUPPORTED_COMPRESSION = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})

_CHUNK_BYTES = 1 << 20
_MIB = 1 << 20
_ENCRYPTED_FLAG = 0x1
_DRIVE_LETTER = re.compile(r"[A-Za-z]:")
_FILE_TYPE_NAMES = {
    stat.S_IFLNK: "a symlink",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
    stat.S_IFREG: "a regular file",
}
# Errors zipfile and zlib raise on damaged archives (truncated, bad CRC, bad deflate data).
_CORRUPTION = (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError)
# The fixed part of a local file header (APPNOTE 4.3.7); its name follows.
_LOCAL_HEADER_BYTES = 30
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
_SHOWN_NAME_CHARACTERS = 120


def is_metadata(path: PurePosixPath) -> bool:
    """Whether ``path`` is a folder's ``metadata.json`` (in any letter case)."""
    return path.name.casefold() == METADATA_NAME


@dataclass(frozen=True)
class ExtractionLimits:
    """Bounds on what one artifact may unpack to."""

    max_members: int
    max_total_bytes: int
    max_compression_ratio: float
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES

    @classmethod
    def from_settings(cls, models: ModelsSettings) -> ExtractionLimits:
        """The limits configured under ``models:`` (sizes in MiB, the metadata's in KiB)."""
        return cls(
            max_members=models.max_members,
            max_total_bytes=int(models.max_uncompressed_mb * _MIB),
            max_compression_ratio=models.max_compression_ratio,
            max_metadata_bytes=int(models.max_metadata_kb * 1024),
        )


@dataclass(frozen=True)
class ExtractedArtifact:
    """The used files of an artifact, written under ``root`` (paths relative to it, sorted)."""

    root: Path
    files: tuple[PurePosixPath, ...]
    ignored: tuple[str, ...]
    # SHA-256 of each file, computed while it was written (saves reading it back to verify).
    sha256: Mapping[PurePosixPath, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedMember:
    """A member that passed every header check and will be read."""

    info: zipfile.ZipInfo
    path: PurePosixPath


@dataclass(frozen=True)
class ExtractionPlan:
    """What to extract from an archive, decided from its headers alone."""

    files: tuple[PlannedMember, ...]
    ignored: tuple[str, ...]


def _shown(name: str) -> str:
    """A member name as messages quote it: escaped by repr, and cut short when very long."""
    if len(name) <= _SHOWN_NAME_CHARACTERS:
        return repr(name)
    half = _SHOWN_NAME_CHARACTERS // 2
    return f"{name[:half]!r}...{name[-half:]!r} ({len(name)} characters)"


def _refuse(name: str, rule: str, kind: type[ArtifactError] = ArtifactError) -> ArtifactError:
    return kind(f"artifact member {_shown(name)} refused: {rule}")


def member_path(name: str) -> PurePosixPath:
    """The safe relative path of a member name, or ArtifactError naming the rule it breaks."""
    if "\x00" in name:
        raise _refuse(name, "NUL byte in its name")
    if "\\" in name:
        raise _refuse(name, "backslash in its name (only '/' separates folders)")
    if name.startswith("/"):
        raise _refuse(name, "absolute path")
    if _DRIVE_LETTER.match(name):
        raise _refuse(name, "drive letter in its path")
    parts = name.split("/")
    if ".." in parts:
        raise _refuse(name, "'..' in its path")
    kept = [part for part in parts if part not in {"", "."}]
    if not kept:
        raise _refuse(name, "empty path")
    if any(len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_PART_BYTES for part in kept):
        raise _refuse(name, f"a name part longer than {MAX_NAME_PART_BYTES} bytes")
    return PurePosixPath(*kept)


def _check_file_type(info: zipfile.ZipInfo) -> None:
    # Unix zips keep st_mode in the high 16 bits; 0 means "not recorded" (e.g. Windows zips).
    file_type = stat.S_IFMT(info.external_attr >> 16)
    expected = stat.S_IFDIR if info.is_dir() else stat.S_IFREG
    if file_type not in {0, expected}:
        kind = _FILE_TYPE_NAMES.get(file_type, f"file type {file_type:#o}")
        raise _refuse(info.orig_filename, f"it is {kind}, not {_FILE_TYPE_NAMES[expected]}")


def _collision_key(path: PurePosixPath) -> str:
    # Case-insensitive filesystems and Unicode normalisation would merge these names.
    return unicodedata.normalize("NFC", str(path)).casefold()


class _NameRegistry:
    """Refuses two members (or a member and a folder) that would land on the same path."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[PurePosixPath, bool]] = {}

    def add(self, name: str, path: PurePosixPath, *, is_dir: bool) -> None:
        for folder in reversed(path.parents[:-1]):
            self._claim(name, folder, is_dir=True)
        self._claim(name, path, is_dir=is_dir)

    def _claim(self, name: str, path: PurePosixPath, *, is_dir: bool) -> None:
        key = _collision_key(path)
        previous = self._seen.get(key)
        if previous is None:
            self._seen[key] = (path, is_dir)
        elif not (is_dir and previous == (path, True)):  # one folder may hold many members
            raise _refuse(name, f"its path collides with {str(previous[0])!r}")


def _stored_length(info: zipfile.ZipInfo) -> int:
    """The fewest bytes a member takes in the file: local header, name, compressed data."""
    return _LOCAL_HEADER_BYTES + len(info.orig_filename.encode("utf-8")) + info.compress_size


def check_layout(infos: Sequence[zipfile.ZipInfo], directory_offset: int | None) -> None:
    """Refuse members that are out of order or overlap, from the central directory alone.

    Each member must start after the previous one (in the central directory's order) ends, and
    the last must end before the central directory at ``directory_offset`` (None: unknown).
    A data descriptor after a member's data is not counted, so only true overlaps are refused.
    """
    previous: zipfile.ZipInfo | None = None
    for info in infos:
        if previous is not None:
            if info.header_offset == previous.header_offset:
                raise _refuse(
                    info.orig_filename, f"it shares its data with {previous.orig_filename!r}"
                )
            if info.header_offset < previous.header_offset:
                raise _refuse(
                    info.orig_filename,
                    f"listed after {previous.orig_filename!r} but stored before it "
                    "(the central directory is out of order)",
                )
            if previous.header_offset + _stored_length(previous) > info.header_offset:
                raise _refuse(
                    previous.orig_filename,
                    f"its data overlaps {info.orig_filename!r} (central directory offsets)",
                )
        previous = info
    last = previous
    end = directory_offset
    if last is not None and end is not None and last.header_offset + _stored_length(last) > end:
        raise _refuse(last.orig_filename, "its data overlaps the central directory")


def plan_extraction(
    infos: Sequence[zipfile.ZipInfo],
    limits: ExtractionLimits,
    *,
    directory_offset: int | None = None,
) -> ExtractionPlan:
    """Check every member's header and choose the members to read; no I/O."""
    if len(infos) > limits.max_members:
        raise ArtifactTooLarge(
            f"artifact has {len(infos)} members, more than the limit of {limits.max_members}"
        )
    check_layout(infos, directory_offset)
    registry = _NameRegistry()
    files: list[PlannedMember] = []
    ignored: list[str] = []
    for info in infos:
        name = info.orig_filename
        path = member_path(name)
        _check_file_type(info)
        registry.add(name, path, is_dir=info.is_dir())
        if info.is_dir():
            continue
        if path.suffix.lower() not in USED_SUFFIXES:
            ignored.append(name)
            continue
        if info.flag_bits & _ENCRYPTED_FLAG:
            raise _refuse(name, "it is encrypted")
        if info.compress_type not in SUPPORTED_COMPRESSION:
            raise _refuse(
                name,
                f"unsupported compression method {info.compress_type} (only stored and deflate)",
            )
        if is_metadata(path) and info.file_size > limits.max_metadata_bytes:
            raise _refuse(
                name,
                f"{info.file_size} bytes, over the {limits.max_metadata_bytes}-byte limit for "
                "metadata (models.max_metadata_kb)",
                ArtifactTooLarge,
            )
        files.append(PlannedMember(info, path))
    return ExtractionPlan(tuple(files), tuple(ignored))


class _InflationBudget:
    """Counts the bytes members really inflate to, against the limits."""

    def __init__(self, limits: ExtractionLimits, archive_size: int) -> None:
        self._limits = limits
        self._archive_size = archive_size
        self._total = 0

    def check(self, member: PlannedMember, produced: int) -> None:
        """Refuse once ``member`` has produced ``produced`` bytes beyond what it may."""
        name, declared = member.info.orig_filename, member.info.file_size
        if produced > declared:
            raise _refuse(name, f"it inflates past its declared size of {declared} bytes")
        # A lying compressed size can only loosen this check up to the archive's real size;
        # the total below counts real bytes whatever the headers say.
        compressed = max(min(member.info.compress_size, self._archive_size), 1)
        ratio = produced / compressed
        if produced > RATIO_GRACE_BYTES and ratio > self._limits.max_compression_ratio:
            raise _refuse(
                name,
                f"compression ratio over {ratio:.0f}:1, more than the limit of "
                f"{self._limits.max_compression_ratio:g}:1",
                ArtifactTooLarge,
            )
        if self._total + produced > self._limits.max_total_bytes:
            raise _refuse(
                name,
                f"artifact inflates to more than the limit of {self._limits.max_total_bytes} bytes",
                ArtifactTooLarge,
            )

    def commit(self, produced: int) -> None:
        """Count a fully extracted member towards the total."""
        self._total += produced


def _uncapped(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    # zipfile silently stops at the declared size; lift its cap so an overrun is seen and refused.
    lifted = copy.copy(info)
    lifted.file_size = sys.maxsize
    return lifted


def _copy_member(
    source: IO[bytes], sink: IO[bytes], member: PlannedMember, budget: _InflationBudget
) -> tuple[int, str]:
    produced = 0
    digest = hashlib.sha256()
    while chunk := source.read(_CHUNK_BYTES):
        produced += len(chunk)
        budget.check(member, produced)
        digest.update(chunk)
        sink.write(chunk)
    return produced, digest.hexdigest()


def _extract_member(
    archive: zipfile.ZipFile, member: PlannedMember, destination: Path, budget: _InflationBudget
) -> tuple[Path, str]:
    name = member.info.orig_filename
    target = destination.joinpath(*member.path.parts)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # "xb": never write through something that already exists at the path.
        with archive.open(_uncapped(member.info)) as source, target.open("xb") as sink:
            produced, sha256 = _copy_member(source, sink, member, budget)
            sink.flush()
            os.fsync(sink.fileno())
    except _CORRUPTION as error:
        raise _refuse(name, f"corrupt data ({error})") from error
    except OSError as error:
        raise _writing_failed(name, target, error) from error
    if produced != member.info.file_size:
        raise _refuse(
            name, f"it inflates to {produced} bytes, not its declared {member.info.file_size}"
        )
    budget.commit(produced)
    return target, sha256


def _writing_failed(name: str, target: Path, error: OSError) -> Exception:
    """What an OSError while writing a member means: the artifact's fault, or the host's."""
    if error.errno in _NO_SPACE:
        return InsufficientDiskSpace(
            f"no space left on the device of {target.parent} while extracting {name!r}"
        )
    if error.errno == errno.ENAMETOOLONG:
        return _refuse(name, "its path is too long for the filesystem")
    return error


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _open_archive(zip_path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except _CORRUPTION as error:
        raise ArtifactError(f"artifact {zip_path.name} is not a readable zip: {error}") from error


def extract_artifact(
    zip_path: Path, destination: Path, limits: ExtractionLimits
) -> ExtractedArtifact:
    """Extract the used members of ``zip_path`` into the empty folder ``destination``.

    Raises ArtifactError (naming the member and the rule) for a hostile, oversized or corrupt
    zip, and leaves ``destination`` empty. ValueError if ``destination`` is not empty.
    """
    destination.mkdir(parents=True, exist_ok=True)
    if any(destination.iterdir()):
        raise ValueError(f"staging folder {destination} is not empty")
    try:
        with _open_archive(zip_path) as archive:
            plan = plan_extraction(archive.infolist(), limits, directory_offset=archive.start_dir)
            for name in plan.ignored:
                logger.warning(
                    f"⚠️ [CLOUD-SYNC] Ignoring artifact member {name}: not .onnx/.json/.pkl"
                )
            budget = _InflationBudget(limits, archive_size=zip_path.stat().st_size)
            written = [
                _extract_member(archive, member, destination, budget) for member in plan.files
            ]
        # New directory entries are durable only once their folder is synced.
        for folder in {destination.joinpath(*p.parts) for m in plan.files for p in m.path.parents}:
            fsync_directory(folder)
    except BaseException:
        _empty(destination)
        raise
    for target, _ in written:
        if target.suffix.lower() == MODEL_SUFFIX:
            logger.info(f"🌐 [CLOUD-SYNC] Model extracted: {target}")
    return ExtractedArtifact(
        root=destination,
        files=tuple(sorted(member.path for member in plan.files)),
        ignored=plan.ignored,
        sha256={m.path: sha for m, (_, sha) in zip(plan.files, written, strict=True)},
    )
