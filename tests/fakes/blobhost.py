"""A fake of the storage host that GitHub redirects artifact downloads to.

It serves each artifact under a signed URL that expires (like an Azure SAS URL), rejects any request
that carries an ``Authorization`` header with 400 (and remembers that it happened), answers 403 to
an expired or forged signature, and can drop the connection in the middle of a body.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

CHUNK_BYTES = 64 * 1024  # small enough that a download arrives in several pieces


@dataclass(frozen=True, slots=True)
class BlobRequest:
    """One request the blob host received."""

    path: str
    had_authorization: bool
    status: int


class FakeBlobHost:
    """Signed, short-lived download URLs over in-memory bytes."""

    def __init__(self, *, url_ttl: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self.url_ttl = url_ttl
        self.declare_length = True  # False: chunked bodies, so the size shows only as it arrives
        # (bytes, seconds): every body is sent that many bytes at a time, that long apart.
        self.drip: tuple[int, float] | None = None
        self.base_url = ""  # set once the server is listening
        self.requests: list[BlobRequest] = []
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._blobs: dict[str, bytes] = {}
        self._drops: deque[int] = deque()

    @property
    def authorization_seen(self) -> bool:
        """Whether any request ever reached this host with an Authorization header."""
        return any(request.had_authorization for request in self.requests)

    @property
    def downloads(self) -> int:
        """How many requests were answered with the blob's bytes (complete or not)."""
        return sum(1 for request in self.requests if request.status == 200)

    def signed_url(self, artifact_id: int, content: bytes) -> str:
        """A fresh URL for ``content``, valid for ``url_ttl`` seconds from now."""
        path = f"/artifacts/{artifact_id}/{secrets.token_hex(8)}/artifact.zip"
        self._blobs[path] = content
        expires = f"{self._clock() + self.url_ttl:.3f}"
        return f"{self.base_url}{path}?exp={expires}&sig={self._signature(path, expires)}"

    def drop_next_download(self, after_bytes: int) -> None:
        """Make the next download send ``after_bytes`` of its body, then cut the connection."""
        self._drops.append(after_bytes)

    def app(self) -> web.Application:
        """The aiohttp application to serve (on another loopback address than the API)."""
        app = web.Application()
        app.router.add_get("/artifacts/{tail:.+}", self._serve)
        return app

    def _signature(self, path: str, expires: str) -> str:
        message = f"{path}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def _signature_valid(self, request: web.Request) -> bool:
        expires = request.query.get("exp", "")
        given = request.query.get("sig", "")
        expected = self._signature(request.path, expires)
        if not hmac.compare_digest(given, expected):
            return False
        try:
            return float(expires) > self._clock()
        except ValueError:
            return False

    def _record(self, request: web.Request, status: int) -> None:
        had_authorization = "Authorization" in request.headers
        self.requests.append(BlobRequest(request.path, had_authorization, status))

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        if "Authorization" in request.headers:
            # As the real storage host does: a bearer token next to a signature is an error.
            self._record(request, 400)
            return web.Response(status=400, text="InvalidAuthenticationInfo")
        content = self._blobs.get(request.path)
        if content is None or not self._signature_valid(request):
            self._record(request, 403)
            return web.Response(
                status=403, text="AuthenticationFailed: signature invalid or expired"
            )
        self._record(request, 200)
        response = web.StreamResponse(headers={"Content-Type": "application/zip"})
        if self.declare_length:
            response.content_length = len(content)
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        limit = self._drops.popleft() if self._drops else None
        body = content if limit is None else content[:limit]
        step, pause = self.drip or (CHUNK_BYTES, 0.0)
        for start in range(0, len(body), step):
            await response.write(body[start : start + step])
            if pause:
                await asyncio.sleep(pause)
        if limit is not None and request.transport is not None:
            request.transport.abort()  # the client sees fewer bytes than Content-Length
        return response
