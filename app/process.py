"""Process-level settings for a long-running host with a latency budget.

The garbage collector: a full collection walks every tracked object in the process, and with
aiohttp, pydantic, numpy and onnxruntime loaded that is tens of milliseconds with the GIL held,
triggered at random by the allocations decisions make (profiled with py-spy during
benchmarks/swap_under_load.py: the lag spikes were ``gc_collect_main``). The host calls
`settle_heap()` once everything is loaded, moving what exists then out of the collector's
sight (``gc.freeze``), so later collections walk only what was allocated since.

The allocator:

Freeing a replaced 300 MB ONNX Runtime session takes 8-12 ms with the GIL held (returning
4 KiB pages one by one), which shows as event-loop lag at the end of every swap. With glibc's
``glibc.malloc.hugetlb=1`` tunable the same free takes about 1 ms (measured here,
benchmarks/swap_under_load.py). glibc reads tunables only at process start, so the standalone
entry point re-executes itself once with the tunable set. An explicit ``GLIBC_TUNABLES`` in the
environment is respected and never changed.
"""

from __future__ import annotations

import gc
import os
import signal
import sys

MALLOC_TUNABLES = "glibc.malloc.hugetlb=1"
_INTERRUPTS_DEFERRED = "_APP_INTERRUPTS_DEFERRED"


def reexec_with_malloc_tunables() -> None:
    """Re-execute this very command line with ``GLIBC_TUNABLES`` set, once, on Linux."""
    if sys.platform != "linux" or "GLIBC_TUNABLES" in os.environ:
        return
    os.environ["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    # Ctrl-C while the new interpreter starts would print its traceback before any line of
    # ours runs: it starts with SIGINT blocked (the mask survives exec), and
    # `restore_interrupts()` unblocks it. Blocked, not ignored: a Ctrl-C meanwhile waits,
    # pending, and arrives then, instead of being lost (a host that never hears it runs on).
    deferred = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if deferred:
        os.environ[_INTERRUPTS_DEFERRED] = "1"
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        os.execv(sys.executable, sys.orig_argv)  # noqa: S606 - the same command, same interpreter
    except OSError:
        restore_interrupts()
        return  # cannot re-exec (unusual sandbox): run as is, only slower to free models


def restore_interrupts() -> None:
    """Ctrl-C raises KeyboardInterrupt again, if `reexec_with_malloc_tunables` deferred it."""
    if os.environ.pop(_INTERRUPTS_DEFERRED, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a pending one comes now


def caused_by_interrupt(error: BaseException) -> bool:
    """Whether Ctrl-C is behind `error`: a C extension interrupted while it initialises (numpy,
    onnxruntime) raises ImportError from the KeyboardInterrupt."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def settle_heap() -> None:
    """Collect once, then freeze everything alive: start-up objects are never walked again."""
    gc.collect()
    gc.freeze()
