"""Artifact zips as the training workflow uploads them: real ONNX models plus metadata.json.

Everything is built in memory and returned as bytes, ready for ``FakeGitHub.add_artifact`` or
for dropping into the inbox. Hostile variants reuse ``tests.zips`` for members that zipfile
would not write by itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.onnx_models import decision_model
from tests.zips import Member, write_zip

MODEL_NAME = "unified_brain.onnx"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_bytes(version: str, *, seed: int | None = None, **kwargs: Any) -> bytes:
    """A serialized decision model that declares ``version`` in its own metadata too.

    The seed defaults to one derived from the version, so two versions are two different files.
    """
    chosen = seed if seed is not None else int(sha256_hex(version.encode())[:8], 16)
    return decision_model(seed=chosen, version=version, **kwargs).SerializeToString()


def metadata_json(
    version: str,
    *,
    model: bytes | None = None,
    slot: str | None = None,
    files: Mapping[str, bytes] | None = None,
    declared_sha256: str | None = None,
) -> bytes:
    """A ``metadata.json`` with the keys the seed's training workflow writes.

    ``model`` gives ``sha256_checksum`` (unless ``declared_sha256`` overrides it, to lie);
    ``files`` gives the general ``files`` map of name -> SHA-256.
    """
    data: dict[str, Any] = {
        "model_type": "unified_brain",
        "version": version,
        "timestamp": "2024-05-01T12:00:00Z",
    }
    if slot is not None:
        data["slot"] = slot
    if declared_sha256 is not None:
        data["sha256_checksum"] = declared_sha256
    elif model is not None:
        data["sha256_checksum"] = sha256_hex(model)
    if files:
        data["files"] = {name: sha256_hex(content) for name, content in files.items()}
    return json.dumps(data, indent=2).encode()


def zip_bytes(members: Sequence[Member]) -> bytes:
    """A zip holding ``members`` (name or header, bytes), written in order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def model_artifact(version: str, **members: Any) -> bytes:
    """An artifact zip of one model folder; ``members`` as for :func:`model_members`."""
    return zip_bytes(model_members(version, **members))


def model_members(
    version: str,
    *,
    folder: str = "",
    name: str = MODEL_NAME,
    slot: str | None = None,
    model: bytes | None = None,
    extra: Mapping[str, bytes] | None = None,
    declared_sha256: str | None = None,
) -> list[Member]:
    """One model folder's members: the model, ``extra`` files, and a metadata.json declaring
    every one's SHA-256 (``declared_sha256`` replaces the model's, to lie about it)."""
    content = model if model is not None else model_bytes(version)
    prefix = f"{folder.strip('/')}/" if folder else ""
    extras = dict(extra or {})
    metadata = metadata_json(
        version, model=content, slot=slot, files=extras, declared_sha256=declared_sha256
    )
    return [
        (prefix + name, content),
        *((prefix + extra_name, data) for extra_name, data in extras.items()),
        (prefix + "metadata.json", metadata),
    ]


def hostile_artifact(directory: Path, members: Sequence[Member]) -> bytes:
    """A zip with ``members`` written exactly as given (via ``tests.zips``), as bytes."""
    path = write_zip(directory / "hostile.zip", list(members))
    data = path.read_bytes()
    path.unlink()
    return data


class _Tripwire:
    """Pickles to a call of ``Path(marker).touch()``: loading it leaves the marker behind."""

    def __init__(self, marker: Path) -> None:
        self._marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self._marker.touch, ())


def tripwire_pickle(marker: Path) -> bytes:
    """Pickle bytes whose unpickling creates ``marker``: proof that nobody unpickled them."""
    return pickle.dumps(_Tripwire(marker))
