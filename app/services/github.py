"""A client for the few GitHub Actions REST endpoints the synchronizer needs.

Every public method is one attempt: retries and backoff belong to the resilience layer that wraps
calls, so errors are typed (``app.errors``) by status code and exception type, never by message
text:

- 401, or 403 without rate-limit signs: ``AuthenticationError`` (retrying will not help);
- 403/429 with ``retry-after``, or ``x-ratelimit-remaining: 0``: ``RateLimited(retry_after)``;
- 410 on a download, or an artifact listed as expired: ``ArtifactExpired``;
- any other failure, connection and timeout errors included: ``UpstreamError(status)``.

The token is sent per request, and only to the API's own origin: never to the blob host that
serves artifact downloads, nor to a ``Link`` that points elsewhere. Error messages name the method
and path of the failed request, never the token nor a signed URL's query string.

What the servers say is trusted only within bounds (``UntrustedAnswer`` past them): an API body
is read up to ``MAX_API_BODY_BYTES``; one cycle reads at most ``github.max_pages_per_cycle``
listing pages (``begin_cycle`` starts a count); a rate-limit reset is believed up to an hour
ahead (GitHub's window) and ignored when it is not a plausible time; a download or ``Link``
that leads anywhere but https (or loopback http) is not followed.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from yarl import URL

from app.errors import (
    ArtifactExpired,
    ArtifactTooLarge,
    AuthenticationError,
    ChecksumMismatch,
    InsufficientDiskSpace,
    RateLimited,
    UnsafeDownloadLocation,
    UntrustedAnswer,
    UpstreamError,
)
from app.services.github_types import (
    Artifact,
    CachedPage,
    ETagCache,
    WorkflowRun,
    compact_api_item,
)
from app.services.network import describe_transport_error, is_fetchable
from app.settings import GitHubSettings

USER_AGENT = "trading-bot-model-sync"
API_VERSION = "2022-11-28"
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
# GitHub's advice for a secondary limit that names no wait: at least a minute.
SECONDARY_LIMIT_DEFAULT_WAIT = 60.0
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# A page of 100 runs is about 0.5 MB; an answer 30 times that is not a listing.
MAX_API_BODY_BYTES = 16 << 20
# GitHub's rate-limit window is an hour: no honest reset or retry-after is further away.
MAX_RATE_LIMIT_WAIT_SECONDS = 3600.0
# A reset further ahead than this is not a clock that is a little off: it is ignored.
_BELIEVABLE_RESET_SECONDS = 86400.0
# Bytes a download may be behind its minimum pace (connection set-up, a slow first second).
THROUGHPUT_ALLOWANCE_BYTES = 256 << 10

_Parsed = TypeVar("_Parsed")


@dataclass(frozen=True, slots=True)
class RateLimitStatus:
    """What GitHub's ``x-ratelimit-*`` headers said; None where a header was absent."""

    remaining: int | None
    reset: datetime | None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], now: float) -> RateLimitStatus:
        remaining = _integer(headers.get("x-ratelimit-remaining"))
        reset = sane_reset(headers.get("x-ratelimit-reset"), now)
        return cls(remaining, None if reset is None else datetime.fromtimestamp(reset, UTC))


def sane_reset(value: str | None, now: float) -> float | None:
    """The moment (Unix seconds) an ``x-ratelimit-reset`` value means, within reason.

    A reset already past is now; one more than an hour ahead is clamped to an hour; anything
    that is not a positive whole number of seconds, or is more than a day ahead (the year
    3000), is ignored: None.
    """
    reset = _integer(value)
    if reset is None or reset <= 0 or reset - now > _BELIEVABLE_RESET_SECONDS:
        return None
    return min(max(float(reset), now), now + MAX_RATE_LIMIT_WAIT_SECONDS)


def upstream_error(
    status: int, headers: Mapping[str, str], *, request: str, now: float
) -> UpstreamError:
    """The typed error for an unsuccessful answer, chosen by status code and headers only."""
    what = f"GitHub answered {status} to {request}"
    if status == 401:
        return AuthenticationError(
            f"{what}: the token was refused (check github.token)", status=401
        )
    if status in {403, 429}:
        retry_after = _retry_after(headers, now)
        if retry_after is not None:
            return RateLimited(
                f"{what}: rate limited for {retry_after:.0f} s",
                retry_after=retry_after,
                status=status,
            )
        if status == 429:
            wait = SECONDARY_LIMIT_DEFAULT_WAIT
            return RateLimited(f"{what}: rate limited", retry_after=wait, status=status)
        return AuthenticationError(
            f"{what}: the token lacks access (it needs actions:read on the repository)",
            status=status,
        )
    if status == 404:
        return UpstreamError(
            f"{what}: not found (check github.owner, github.repository and github.workflow)",
            status=status,
        )
    return UpstreamError(what, status=status)


def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait by ``retry-after``, else by an exhausted rate limit; None if neither."""
    value = headers.get("retry-after")
    if value is not None:
        seconds: float | None = _integer(value)
        if seconds is None:
            with suppress(TypeError, ValueError, OverflowError):
                seconds = parsedate_to_datetime(value).timestamp() - now
        if seconds is not None:
            return min(max(seconds, 0.0), MAX_RATE_LIMIT_WAIT_SECONDS)
    if headers.get("x-ratelimit-remaining") == "0":
        reset = sane_reset(headers.get("x-ratelimit-reset"), now)
        return reset - now if reset is not None else SECONDARY_LIMIT_DEFAULT_WAIT
    return None


def _parsed(parse: Callable[[dict[str, Any]], _Parsed], item: Any) -> _Parsed:
    """An API object read by ``parse``; a malformed one is GitHub's failure, not a crash."""
    try:
        return parse(item)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise UpstreamError(f"GitHub sent a malformed object: {type(error).__name__}") from error


def _integer(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _shown(url: URL) -> str:
    """A URL as error messages may show it: no query string (a signed URL's secret lives there)."""
    return str(url.with_query(None).with_fragment(None))


class GitHubActionsClient:
    """Lists workflow runs and artifacts of one repository and downloads artifacts."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: GitHubSettings,
        *,
        etag_cache: ETagCache | None = None,
        user_agent: str = USER_AGENT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._settings = settings
        self._cache = etag_cache
        self._user_agent = user_agent
        self._clock = clock
        self._api = URL(settings.effective_api_url)
        self._repo = self._api / "repos" / settings.owner / settings.repository / "actions"
        # Read by monitoring: the API's last word on its rate limit, and every request sent
        # (to the API and to the blob host).
        self.rate_limit_remaining: int | None = None
        self.rate_limit_reset: datetime | None = None
        self.requests_sent = 0
        self._pages_read = 0

    def begin_cycle(self) -> None:
        """Start counting listing pages against ``github.max_pages_per_cycle`` afresh."""
        self._pages_read = 0

    async def iter_runs(self) -> AsyncIterator[WorkflowRun]:
        """Successful runs of the configured workflow and branch, newest first, page by page."""
        workflow = self._settings.workflow
        base = self._repo / "workflows" / workflow / "runs" if workflow else self._repo / "runs"
        query = {"status": "success", "per_page": str(self._settings.per_page)}
        if self._settings.branch:
            query["branch"] = self._settings.branch
        async for item in self._paginate(base.with_query(query), "workflow_runs"):
            yield _parsed(WorkflowRun.from_api, item)

    async def get_run(self, run_id: int) -> WorkflowRun:
        """One workflow run by id."""
        page = await self._fetch_page(self._repo / "runs" / str(run_id), key=None)
        return _parsed(WorkflowRun.from_api, page.items[0])

    async def list_artifacts(self, run_id: int) -> list[Artifact]:
        """Every artifact of a run (all pages), expired ones included."""
        url = (self._repo / "runs" / str(run_id) / "artifacts").with_query(
            per_page=str(self._settings.per_page)
        )
        return [_parsed(Artifact.from_api, item) async for item in self._paginate(url, "artifacts")]

    async def download_artifact(
        self,
        artifact: Artifact,
        destination: Path,
        *,
        max_bytes: int,
        on_progress: Callable[[int], None] | None = None,
        min_kbps: float = 0.0,
    ) -> str:
        """Stream the artifact's zip to ``destination``; return its hex SHA-256.

        Asks the API for a fresh signed URL and follows it without the token. Refuses before
        downloading when the artifact is expired or larger than ``max_bytes``, and fails
        (``InsufficientDiskSpace``, transient) when it is larger than the free space or the disk
        fills while it arrives; aborts when more than ``max_bytes`` arrive; checks GitHub's
        ``digest`` when given. A body arriving slower than ``min_kbps`` kilobits per second on
        average (after ``THROUGHPUT_ALLOWANCE_BYTES``) is cut: ``UpstreamError``, transient.
        A partial file is removed on any failure.
        """
        label = f"artifact {artifact.name!r} (id {artifact.id})"
        if artifact.expired:
            raise ArtifactExpired(f"{label} has expired on GitHub")
        _check_room(label, artifact.size_in_bytes, destination, max_bytes)
        location = await self._signed_location(artifact)
        receiving = _Receiving(destination, label, max_bytes, min_kbps, on_progress)
        digest = await self._stream_to_file(location, receiving)
        if artifact.sha256 is not None and digest != artifact.sha256:
            _remove_partial(destination)
            raise ChecksumMismatch(
                f"{label}: SHA-256 of the download is {digest}, GitHub declares {artifact.sha256}"
            )
        return digest

    # -- listing -----------------------------------------------------------------------------

    async def _paginate(self, url: URL, key: str) -> AsyncIterator[dict[str, Any]]:
        """Items of every page, following ``Link: rel="next"``; each page fetched when needed."""
        next_url: URL | None = url
        while next_url is not None:
            page = await self._fetch_page(next_url, key=key)
            for item in page.items:
                yield item
            next_url = URL(page.next_url) if page.next_url else None

    async def _fetch_page(self, url: URL, *, key: str | None) -> CachedPage:
        """One page (``key`` names its list; None: the body is the single item), via the cache."""
        budget = self._settings.max_pages_per_cycle
        if key is not None:
            if self._pages_read >= budget:
                raise UntrustedAnswer(
                    f"GitHub's listing went on for more than {budget} pages this cycle "
                    f"(github.max_pages_per_cycle); stopped before GET {_shown(url)}"
                )
            self._pages_read += 1
        cached = self._cache.get(str(url)) if self._cache is not None else None
        extra = {"If-None-Match": cached.etag} if cached is not None else {}
        async with self._get(url, extra) as response:
            if response.status == 304 and cached is not None:
                return cached
            if response.status != 200:
                raise self._error(response)
            body = await self._json(response)
            items = (body,) if key is None else body.get(key)
            if not isinstance(items, list | tuple):
                raise UpstreamError(f"GitHub's answer to GET {_shown(url)} has no {key!r} list")
            next_url = self._next_url(response)
            page = CachedPage(
                etag=response.headers.get("ETag", ""),
                items=tuple(compact_api_item(i) if isinstance(i, dict) else i for i in items),
                next_url=next_url,
            )
        if self._cache is not None and page.etag:
            self._cache.put(str(url), page)
        return page

    @staticmethod
    def _next_url(response: aiohttp.ClientResponse) -> str | None:
        """The page ``Link: rel="next"`` names, if it is a URL this client may fetch."""
        next_link = response.links.get("next")
        if not next_link:
            return None
        target = response.url.join(URL(str(next_link["url"])))
        if not is_fetchable(target):
            raise UntrustedAnswer(
                f"GitHub's answer to GET {_shown(response.url)} links its next page to "
                f"{_shown(target)!r}, which is not https"
            )
        return str(target)

    @staticmethod
    async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
        declared = response.content_length
        if declared is not None and declared > MAX_API_BODY_BYTES:
            raise _body_too_large(response)
        raw = bytearray()
        async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK_BYTES):
            raw += chunk
            if len(raw) > MAX_API_BODY_BYTES:
                raise _body_too_large(response)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as error:
            raise UpstreamError(
                f"GitHub's answer to GET {_shown(response.url)} is not JSON", status=response.status
            ) from error
        if not isinstance(body, dict):
            raise UpstreamError(f"GitHub's answer to GET {_shown(response.url)} is not an object")
        return body

    # -- downloading -------------------------------------------------------------------------

    async def _signed_location(self, artifact: Artifact) -> URL:
        """Ask the API where the artifact's bytes are; the answer is a short-lived signed URL."""
        url = URL(
            artifact.archive_download_url
            or str(self._repo / "artifacts" / str(artifact.id) / "zip")
        )
        async with self._get(url) as response:
            if response.status == 410:
                raise ArtifactExpired(
                    f"artifact {artifact.name!r} (id {artifact.id}) has expired (410)", status=410
                )
            location = response.headers.get("Location")
            if response.status not in REDIRECT_STATUSES or not location:
                if response.status < 400:
                    raise UpstreamError(
                        f"GitHub answered {response.status} to GET {_shown(url)}, not a redirect",
                        status=response.status,
                    )
                raise self._error(response)
            try:
                target = response.url.join(URL(location))
            except ValueError:
                target = URL()
            if not is_fetchable(target):
                raise UnsafeDownloadLocation(
                    f"artifact {artifact.name!r} (id {artifact.id}): its download redirects to "
                    f"{_shown(target) or 'an unreadable URL'!r}, which is not https; not followed"
                )
            return target

    async def _stream_to_file(self, location: URL, receiving: _Receiving) -> str:
        """Write the body at ``location`` to its destination, hashing it; remove it on failure."""
        # A signed URL is its own credential: the token is never sent along, whatever the host.
        async with self._get(location, authorize=False) as response:
            if response.status != 200:
                # The blob host's refusals (an expired signature, ...) are worth a retry, which
                # asks the API for a fresh URL: none of them is an authentication problem of ours.
                # status None: resilience retries it like a dropped connection (fresh URL).
                raise UpstreamError(
                    f"the artifact host answered {response.status} to GET {_shown(location)}",
                    status=None,
                )
            if response.content_length is not None:
                _check_size(receiving.label, response.content_length, receiving.max_bytes)
            try:
                return await _receive(response.content, receiving)
            except BaseException:
                _remove_partial(receiving.destination)
                raise

    # -- HTTP --------------------------------------------------------------------------------

    def _headers(self, url: URL, *, authorize: bool) -> dict[str, str]:
        """Request headers; the token only for the API's own origin (scheme, host and port)."""
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": self._user_agent,
        }
        token = self._settings.token.get_secret_value()
        if authorize and token and url.origin() == self._api.origin():
            headers["Authorization"] = f"Bearer {token}"
        return headers

    @asynccontextmanager
    async def _get(
        self,
        url: URL,
        extra_headers: Mapping[str, str] | None = None,
        *,
        authorize: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One GET, redirects not followed; transport failures become ``UpstreamError``."""
        if url.origin() == self._api.origin():
            self._refuse_while_exhausted(url)
        headers = {**self._headers(url, authorize=authorize), **(extra_headers or {})}
        self.requests_sent += 1
        try:
            async with self._session.get(url, headers=headers, allow_redirects=False) as response:
                if url.origin() == self._api.origin():
                    self._observe_rate_limit(response.headers)
                yield response
        except (aiohttp.ClientError, TimeoutError) as error:
            raise UpstreamError(
                f"GET {_shown(url)} failed: {describe_transport_error(error)}", status=None
            ) from error

    def _refuse_while_exhausted(self, url: URL) -> None:
        """GitHub said no requests are left until the reset: do not spend one to hear it again."""
        if self.rate_limit_remaining != 0 or self.rate_limit_reset is None:
            return
        wait = self.rate_limit_reset.timestamp() - self._clock()
        if wait > 0:
            raise RateLimited(
                f"GET {_shown(url)} not sent: GitHub's rate limit is used up until "
                f"{self.rate_limit_reset:%H:%M:%S} UTC",
                retry_after=wait,
            )

    def _observe_rate_limit(self, headers: Mapping[str, str]) -> None:
        status = RateLimitStatus.from_headers(headers, self._clock())
        if status.remaining is not None:
            # The two go together: an unbelievable reset must not outlive the answer it came in.
            self.rate_limit_remaining = status.remaining
            self.rate_limit_reset = status.reset

    def _error(self, response: aiohttp.ClientResponse) -> UpstreamError:
        request = f"GET {_shown(response.url)}"
        return upstream_error(response.status, response.headers, request=request, now=self._clock())


@dataclass(frozen=True, slots=True)
class _Receiving:
    """Where a download goes and the bounds it is received within."""

    destination: Path
    label: str
    max_bytes: int
    min_kbps: float
    on_progress: Callable[[int], None] | None


async def _receive(body: aiohttp.StreamReader, receiving: _Receiving) -> str:
    """Copy ``body`` into the destination chunk by chunk, hashing it; its hex SHA-256."""
    destination = receiving.destination
    try:
        return await _write_body(body, receiving)
    except OSError as error:
        if error.errno in {errno.ENOSPC, errno.EDQUOT}:
            raise InsufficientDiskSpace(
                f"no space left on the device of {destination.parent} "
                f"while downloading {receiving.label}"
            ) from error
        raise


async def _write_body(body: aiohttp.StreamReader, receiving: _Receiving) -> str:
    """The copy itself, under a moving deadline: the next bytes are due by the minimum pace."""
    digest = hashlib.sha256()
    received = 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    pace = receiving.min_kbps * 1000 / 8  # bytes per second; 0: no minimum

    def due(count: int) -> float | None:
        return started + (count + THROUGHPUT_ALLOWANCE_BYTES) / pace if pace else None

    try:
        async with asyncio.timeout_at(due(0)) as window:
            with receiving.destination.open("wb") as file:
                # iter_any: whatever has arrived, so that a drip is seen as it drips.
                async for chunk in body.iter_any():
                    received += len(chunk)
                    # A hostile host may send more than it said.
                    _check_size(receiving.label, received, receiving.max_bytes)
                    digest.update(chunk)
                    file.write(chunk)
                    window.reschedule(due(received))
                    if receiving.on_progress is not None:
                        receiving.on_progress(received)
                file.flush()
                # No fsync: the zip is scratch, deleted after extraction, and what is extracted
                # from it is fsynced before it is installed (measured: 0.1 s per 200 MB).
    except TimeoutError as error:
        if not window.expired():
            raise
        seconds = loop.time() - started
        raise UpstreamError(
            f"the artifact host sent {receiving.label} too slowly: {received} bytes in "
            f"{seconds:.1f}s, under the minimum of {receiving.min_kbps:g} kbit/s "
            "(resilience.min_download_kbps)",
            status=None,
        ) from error
    return digest.hexdigest()


def _body_too_large(response: aiohttp.ClientResponse) -> UntrustedAnswer:
    return UntrustedAnswer(
        f"GitHub's answer to GET {_shown(response.url)} is more than {MAX_API_BODY_BYTES} bytes; "
        "not read further"
    )


def _check_size(label: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise ArtifactTooLarge(f"{label} is over the {max_bytes}-byte limit ({size} bytes or more)")


def _check_room(label: str, size: int, destination: Path, max_bytes: int) -> None:
    """Refuse before downloading what is over the limit or would not fit on the disk."""
    _check_size(label, size, max_bytes)
    free = shutil.disk_usage(destination.parent).free
    if size > free:
        raise InsufficientDiskSpace(
            f"{label} is {size} bytes but only {free} bytes are free in {destination.parent}"
        )


def _remove_partial(path: Path) -> None:
    """Delete a partial download; synchronous so that it also runs while being cancelled."""
    path.unlink(missing_ok=True)


__all__ = [
    "MAX_API_BODY_BYTES",
    "GitHubActionsClient",
    "RateLimitStatus",
    "sane_reset",
    "upstream_error",
]
