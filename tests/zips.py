"""Build real zip files for tests, including hostile ones zipfile would not write by itself."""

from __future__ import annotations

import struct
import warnings
import zipfile
from pathlib import Path

# Offsets inside a central directory record and a local file header (APPNOTE 4.3.7, 4.3.12).
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_CENTRAL_FIXED = 46
_CENTRAL_FLAGS, _CENTRAL_METHOD, _CENTRAL_FILE_SIZE = 8, 10, 24
_CENTRAL_COMPRESS_SIZE = 20
_CENTRAL_NAME_LENGTH, _CENTRAL_LOCAL_OFFSET = 28, 42  # then extra and comment lengths
_LOCAL_FLAGS, _LOCAL_METHOD, _LOCAL_FILE_SIZE = 6, 8, 22
_LOCAL_COMPRESS_SIZE = 18
_END_SIGNATURE = b"PK\x05\x06"
_END_DIRECTORY_OFFSET = 16

Member = tuple[str | zipfile.ZipInfo, bytes]


def entry(
    name: str, *, mode: int | None = None, compress_type: int = zipfile.ZIP_DEFLATED
) -> zipfile.ZipInfo:
    """A member header with the name as given (no cleaning) and, optionally, a Unix st_mode."""
    info = zipfile.ZipInfo(name)
    info.compress_type = compress_type
    if mode is not None:
        info.create_system = 3
        info.external_attr = mode << 16
    return info


def write_zip(path: Path, members: list[Member]) -> Path:
    """Write ``members`` (name or header, bytes) in order; duplicates are written as given."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return path


def patch_header(
    path: Path,
    name: str,
    *,
    file_size: int | None = None,
    set_flags: int = 0,
    compress_type: int | None = None,
    compress_size: int | None = None,
) -> None:
    """Rewrite fields of ``name``'s central and local headers, leaving its data as it was."""
    data = bytearray(path.read_bytes())
    encoded = name.encode()
    position = data.find(_CENTRAL_SIGNATURE)
    while position >= 0:
        length = struct.unpack_from("<H", data, position + _CENTRAL_NAME_LENGTH)[0]
        start = position + _CENTRAL_FIXED
        if bytes(data[start : start + length]) == encoded:
            local = struct.unpack_from("<I", data, position + _CENTRAL_LOCAL_OFFSET)[0]
            _patch(data, position, _CENTRAL_FLAGS, _CENTRAL_METHOD, _CENTRAL_FILE_SIZE,
                   file_size, set_flags, compress_type)  # fmt: skip
            _patch(data, local, _LOCAL_FLAGS, _LOCAL_METHOD, _LOCAL_FILE_SIZE,
                   file_size, set_flags, compress_type)  # fmt: skip
            if compress_size is not None:
                struct.pack_into("<I", data, position + _CENTRAL_COMPRESS_SIZE, compress_size)
                struct.pack_into("<I", data, local + _LOCAL_COMPRESS_SIZE, compress_size)
            path.write_bytes(bytes(data))
            return
        position = data.find(_CENTRAL_SIGNATURE, position + 1)
    raise LookupError(f"{name!r} is not in {path}")


def _patch(
    data: bytearray,
    base: int,
    flags_at: int,
    method_at: int,
    size_at: int,
    file_size: int | None,
    set_flags: int,
    compress_type: int | None,
) -> None:
    flags = struct.unpack_from("<H", data, base + flags_at)[0]
    struct.pack_into("<H", data, base + flags_at, flags | set_flags)
    if compress_type is not None:
        struct.pack_into("<H", data, base + method_at, compress_type)
    if file_size is not None:
        struct.pack_into("<I", data, base + size_at, file_size)


def reverse_central_directory(path: Path) -> None:
    """List the members in the central directory in the reverse of their order in the file."""
    data = path.read_bytes()
    end = data.rfind(_END_SIGNATURE)
    start = struct.unpack_from("<I", data, end + _END_DIRECTORY_OFFSET)[0]
    records, position = [], start
    while position < end:
        lengths = struct.unpack_from("<HHH", data, position + _CENTRAL_NAME_LENGTH)
        size = _CENTRAL_FIXED + sum(lengths)
        records.append(data[position : position + size])
        position += size
    path.write_bytes(data[:start] + b"".join(reversed(records)) + data[end:])


def share_local_header(path: Path, name: str, other: str) -> None:
    """Point ``name``'s central directory entry at ``other``'s local header and data.

    The "full overlap" of a zip bomb: two entries, one stored member, inflated twice.
    """
    data = bytearray(path.read_bytes())
    offsets: dict[str, tuple[int, int]] = {}  # name -> (its record's position, local offset)
    position = data.find(_CENTRAL_SIGNATURE)
    while position >= 0:
        length = struct.unpack_from("<H", data, position + _CENTRAL_NAME_LENGTH)[0]
        start = position + _CENTRAL_FIXED
        record_name = bytes(data[start : start + length]).decode()
        local = struct.unpack_from("<I", data, position + _CENTRAL_LOCAL_OFFSET)[0]
        offsets[record_name] = (position, local)
        position = data.find(_CENTRAL_SIGNATURE, position + 1)
    struct.pack_into("<I", data, offsets[name][0] + _CENTRAL_LOCAL_OFFSET, offsets[other][1])
    path.write_bytes(bytes(data))
