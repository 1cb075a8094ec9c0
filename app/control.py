"""The CLI's way to the running host: ``promote`` and ``reject`` through its ops server.

The host writes where it listens and a control token of its own to ``models/.sync/ops.json``
(mode 0600) while its ops server runs; whoever can read that file may already write the models
directory, so it is the credential the admin endpoints ``/admin/promote`` and ``/admin/reject``
accept beside ``ops.admin_token``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import aiohttp

from app.errors import AppError
from app.install.layout import ModelsLayout

_TIMEOUT_SECONDS = 30.0


class HostUnreachable(AppError):
    """No running host to ask, or it did not answer."""


def _control(layout: ModelsLayout) -> dict[str, Any]:
    path = layout.ops_file
    try:
        control: Any = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise HostUnreachable(
            f"no running host serves {layout.root} (no {path}): start one with `python -m app` "
            "and ops.enabled: true"
        ) from None
    except (OSError, ValueError) as error:
        raise HostUnreachable(f"cannot read {path}: {error}") from None
    if (
        not isinstance(control, dict)
        or not {"pid", "url", "token"} <= control.keys()
        or not isinstance(control["pid"], int)
        or isinstance(control["pid"], bool)
        or not 0 < control["pid"] < 2**31
        or not isinstance(control["url"], str)
        or not isinstance(control["token"], str)
    ):
        raise HostUnreachable(f"{path} is not what a host writes")
    try:
        os.kill(control["pid"], 0)
    except ProcessLookupError:
        raise HostUnreachable(
            f"the host that wrote {path} (pid {control['pid']}) is not running"
        ) from None
    except PermissionError:
        pass  # alive, under another user
    return control


async def ask_host(layout: ModelsLayout, verb: str, slot: str | None) -> tuple[bool, str]:
    """POST ``/admin/<verb>`` to the running host: (done, what it said)."""
    control = _control(layout)
    timeout = aiohttp.ClientTimeout(total=_TIMEOUT_SECONDS)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(
                f"{control['url']}/admin/{verb}",
                json={} if slot is None else {"slot": slot},
                headers={"Authorization": f"Bearer {control['token']}"},
            ) as response,
        ):
            answer: Any = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        raise HostUnreachable(f"the host at {control['url']} did not answer: {error}") from None
    if not isinstance(answer, dict):
        raise HostUnreachable(f"the host at {control['url']} answered {answer!r}")
    said = str(answer.get("reason") or answer.get("error") or response.status)
    return bool(answer.get("ok")) and response.status == 200, said
