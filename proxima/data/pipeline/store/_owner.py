"""Who owns a run: a process on a host, and whether it is still alive.

A run being resumed is claimed by the live run resuming it (R13.5). A claim
is nothing but that run's row: its process id, the process's start time and
the host name. A claim is released when the run finishes (``finish()``), or
when its process is found dead: the pid is gone, a zombie, or now belongs to
a process that started at another time (the pid was reused). A process on
another host cannot be checked: its claim holds until its run finishes.

Runs owned by this process are alive while their journal is open: they are
registered here by run id and dropped at ``finish()`` (or when the journal
is garbage-collected without one).
"""

from __future__ import annotations

import os
import socket
import threading
import weakref
from typing import Any

import attrs

__all__ = ["Owner", "is_alive", "register", "this_process", "unregister"]


@attrs.frozen
class Owner:
    pid: int
    host: str
    #: The process's start time as the OS reports it ("" where unknown).
    start: str


_live: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_live_lock = threading.Lock()
_me: Owner | None = None


def this_process() -> Owner:
    """The current process (recomputed after a fork)."""
    global _me
    pid = os.getpid()
    if _me is None or _me.pid != pid:
        _me = Owner(pid, socket.gethostname(), _start_time(pid) or "")
    return _me


def register(run_id: str, journal: Any) -> None:
    with _live_lock:
        _live[run_id] = journal


def unregister(run_id: str) -> None:
    with _live_lock:
        _live.pop(run_id, None)


def is_alive(owner: Owner, run_id: str) -> bool:
    """Whether the run ``run_id`` owned by ``owner`` may still be going on."""
    me = this_process()
    if owner.host != me.host:
        return True  # cannot be checked from here
    if owner.pid == me.pid and owner.start == me.start:
        with _live_lock:
            return run_id in _live
    return _pid_alive(owner.pid, owner.start)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def _start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def _pid_alive(pid: int, start: str) -> bool:
    if os.name == "nt":  # pragma: no cover - not run on the CI platforms
        return _windows_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    except OSError:
        return False
    fields = _stat_fields(pid)
    if fields is None:
        return not os.path.isdir("/proc")  # no procfs: trust kill(0)
    if fields[0] in ("Z", "X"):  # a zombie or dead: killed, not yet reaped
        return False
    return not start or len(fields) <= 19 or fields[19] == start


def _windows_alive(pid: int) -> bool:  # pragma: no cover - not run on the CI platforms
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return False
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return False
        return bool(code.value == 259)  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
