"""Every error this package raises on purpose.

::

    AppError
    ├── ConfigurationError        a setting is missing or out of range (names the key)
    ├── ModelsDirectoryLocked     another process is writing to the models directory
    ├── InsufficientDiskSpace     no room on the disk (ENOSPC, or too little free space to
    │                             start): the host's state, not the artifact's, so tried again
    ├── HostAlreadyRunning        another host serves the same models directory
    ├── OpsServerUnavailable      the ops server cannot listen (port in use, not allowed)
    ├── QuarantineUnreadable      models/.sync/quarantine.json cannot be read: every model
    │                             counts as quarantined until it is repaired (fail closed)
    ├── AmbiguousSha256           a SHA-256 given by hand names no single model: not hex,
    │                             under 8 digits, or the prefix of several
    ├── UpstreamError             GitHub or the blob host failed us
    │   ├── AuthenticationError   401, or 403 without rate-limit signs: not retried
    │   ├── RateLimited           403/429 with retry-after or x-ratelimit-remaining: 0
    │   ├── ArtifactExpired       410 on download, or `expired: true`
    │   └── UntrustedAnswer       an answer past what we accept from any server: a body over
    │                             its cap, more pages than a cycle may read; not retried at once
    ├── ArtifactError             the artifact itself is bad: checksum, hostile zip, size
    │   ├── ArtifactTooLarge      over a size, count or compression-ratio limit
    │   ├── ChecksumMismatch
    │   ├── NoModelForSlot        no model in it that a configured slot can take
    │   ├── UnsafeDownloadLocation  its download redirects to anything but https
    │   └── ModelQuarantined      its model (by SHA-256), or the artifact itself, is
    │                             quarantined: never installed again until released by hand
    ├── ModelError                a model file cannot serve: unreadable, incompatible, bad output
    │   ├── ModelLoadFailed       not a file ONNX Runtime can build a session from
    │   ├── ModelIncompatible     its inputs or outputs do not fit the slot
    │   └── ModelOutputInvalid    the warm-up output is not finite, not shaped as declared, or
    │                             not probabilities
    └── InstallFailed             backing up or installing the files failed (the disk, not the
                                  model)

Each carries what a user needs to act on it in its message; secrets never appear in one. Each
class also names the metric reason code its refusals are counted under (``reason_code``, one of
``app.services.monitoring.ARTIFACT_REASONS``), so the code follows from the type, never the text.
"""

from __future__ import annotations

from typing import ClassVar


class AppError(Exception):
    """Base of every error raised on purpose by this package."""

    reason_code: ClassVar[str] = "other"


class ConfigurationError(AppError):
    """A setting is invalid; the message names the key and what is allowed."""


class ModelsDirectoryLocked(AppError):
    """Another process holds the models directory's write lock."""


class InsufficientDiskSpace(AppError):
    """The disk is full or too full to start: transient, whatever artifact was being handled."""


class HostAlreadyRunning(AppError):
    """Another long-running host holds the models directory's host lock."""


class OpsServerUnavailable(AppError):
    """The ops HTTP server cannot listen on its address (the port is in use, for one)."""


class QuarantineUnreadable(AppError):
    """The quarantine file cannot be read; no model is installed until it is repaired.

    Failing closed: reading it as empty would let a model rolled back for how it traded
    back in. The host's state, not the artifact's, so an artifact refused for it is tried again.
    """

    reason_code = "quarantined"


class AmbiguousSha256(AppError):
    """A SHA-256 (or prefix) given by hand that names no single model."""


class UpstreamError(AppError):
    """A remote service (GitHub's API, the artifact blob host) failed."""

    reason_code = "download_failed"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthenticationError(UpstreamError):
    """The token was refused; retrying will not help."""


class RateLimited(UpstreamError):
    """GitHub asked us to wait `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class ArtifactExpired(UpstreamError):
    """The artifact is gone (410, or listed as expired)."""

    reason_code = "expired"


class UntrustedAnswer(UpstreamError):
    """A server's answer went past a bound this package puts on any answer (size, pages)."""


class ArtifactError(AppError):
    """The artifact's content is unacceptable; it is rejected and not downloaded again."""

    reason_code = "unsafe_archive"


class NoModelForSlot(ArtifactError):
    """The artifact holds no model that any configured slot can take."""

    reason_code = "no_models"


class ArtifactTooLarge(ArtifactError):
    """Over a configured limit: bytes, members, inflated size, compression ratio, free disk."""

    reason_code = "too_large"


class ChecksumMismatch(ArtifactError):
    """A declared SHA-256 does not match the bytes."""

    reason_code = "checksum_mismatch"


class ModelQuarantined(ArtifactError):
    """The model (by SHA-256), or the artifact it came in, is quarantined.

    Not for good, unlike other artifact errors: once the quarantine is released by hand, the
    artifact is eligible again.
    """

    reason_code = "quarantined"

    def __init__(self, *, sha256: str, version: str, why: str, since: str) -> None:
        short = sha256[:12]
        super().__init__(
            f"model sha256 {short} (version {version}) is quarantined: {why} (since {since}); "
            f"release it with: python -m app quarantine release {short}"
        )
        self.sha256 = sha256


class ModelError(AppError):
    """A model cannot be loaded or would not serve correctly."""


class UnsafeDownloadLocation(ArtifactError):
    """The artifact's download redirects to a URL that is not https (nor loopback in tests)."""


class ModelLoadFailed(ModelError):
    """Missing, empty, a folder, or a file ONNX Runtime cannot build a session from."""

    reason_code = "load_failed"


class ModelIncompatible(ModelError):
    """The model's inputs or outputs do not fit its slot (names, types, shapes)."""

    reason_code = "incompatible"


class ModelOutputInvalid(ModelError):
    """The warm-up output is not finite, not shaped as declared, or not probabilities."""

    reason_code = "invalid_output"


class InstallFailed(AppError):
    """Backing up or installing the files failed; the model itself may be fine."""

    reason_code = "install_failed"


def reason_code_of(error: BaseException | None) -> str:
    """The metric reason code of a refusal, from its error's type (never its text).

    An error of this package names its own code (``AppError.reason_code``); an ``OSError`` while
    staging, backing up or installing is ``install_failed``; anything else is ``other``.
    """
    if isinstance(error, AppError):
        return error.reason_code
    if isinstance(error, OSError):
        return "install_failed"
    return "other"
