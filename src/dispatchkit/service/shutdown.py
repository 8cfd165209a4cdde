"""The bounded end of ``serve``: the drain deadline and the worker's tie to its parent.

    main process                                   granian's worker process
    SIGTERM/SIGINT ─▶ granian stops the worker ──▶ stops accepting; waits for
      and arms the drain deadline                    every open connection
    deadline passed ─▶ SIGUSR1 ───────────────────▶ drain now: the accepted queue
                                                     is written, the sink flushed,
    main process killed ─▶ (kernel) SIGUSR1 ──────▶ then the process exits, which
                                                     closes the open connections

granian waits for every open connection before the worker's shutdown hook
runs, so a client that never finishes its request would hold ``serve`` forever.
granian's own ``workers_kill_timeout`` SIGKILLs the worker instead, which loses
every payload answered 202 but not yet written: it stays only as the last
resort, should the worker not finish even its own drain.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Final

from dispatchkit.exit_codes import RET_DRAIN_DEADLINE

__all__ = [
    "DRAIN_DEADLINE_EXIT",
    "DRAIN_NOW",
    "FLUSH_GRACE",
    "die_with_parent",
    "open_connections",
]

logger = logging.getLogger(__name__)

#: Exit status of a worker (and of ``dispatchkit serve``) whose drain deadline
#: passed: open connections were closed, the accepted payloads still written.
DRAIN_DEADLINE_EXIT: Final = RET_DRAIN_DEADLINE

#: The signal that tells the worker to drain now: sent by the main process at
#: the deadline, and by the kernel when the main process dies.
DRAIN_NOW: Final = signal.SIGUSR1

#: Seconds the worker has, after the deadline, to write what it accepted
#: before it gives up (and, one second later, granian kills it).
FLUSH_GRACE: Final = 10.0

#: prctl(2) option: the signal this process gets when its parent thread dies.
_PR_SET_PDEATHSIG: Final = 1

#: TCP state of a listening socket in /proc/net/tcp (not a connection).
_TCP_LISTEN: Final = "0A"


def die_with_parent(parent: int) -> None:
    """Have the kernel send :data:`DRAIN_NOW` to this process when ``parent`` dies.

    A worker outliving a ``kill -9`` of its main process would keep answering
    on the port, and a supervisor's restart would fail on "address in use".
    Linux only (prctl); elsewhere nothing is done.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(DRAIN_NOW), 0, 0, 0) != 0:
        logger.warning("cannot tie the worker to its parent: %s", os.strerror(ctypes.get_errno()))
        return
    if os.getppid() != parent:
        # The parent died before prctl took effect: no signal will come.
        logger.error("the main process %d is gone; stopping", parent)
        os._exit(DRAIN_DEADLINE_EXIT)


def open_connections(port: int) -> int | None:
    """TCP connections this process holds on local ``port`` (None: cannot tell here).

    Read from /proc (Linux): the sockets among this process's file descriptors,
    matched against the kernel's TCP tables, the listening socket left out.
    """
    try:
        sockets = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue  # closed meanwhile
            if target.startswith("socket:["):
                sockets.add(target[len("socket:[") : -1])
        count = 0
        for table in (Path("/proc/self/net/tcp"), Path("/proc/self/net/tcp6")):
            if not table.exists():
                continue
            for line in table.read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if (
                    int(local.rsplit(":", 1)[1], 16) == port
                    and state != _TCP_LISTEN
                    and inode in sockets
                ):
                    count += 1
    except (OSError, ValueError, IndexError):
        return None
    return count
