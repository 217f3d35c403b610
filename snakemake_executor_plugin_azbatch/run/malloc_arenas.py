"""Fewer glibc malloc arenas in the Snakemake process while this executor runs it.

glibc gives every thread that allocates concurrently an arena of its own (up to 8 per core) and keeps what is freed
in each. The plugin's I/O-bound threads (parallel submission, output collection, progress) made about 35 MiB of a
20,000-task run's peak that way (490 MiB against 455 MiB with two arenas, `make bench`'s scale workload). Two
arenas serve threads that mostly wait on the network as well. `MALLOC_ARENA_MAX`, when the user set it, stands:
glibc read it at start, and this leaves it alone. Elsewhere than glibc on Linux, nothing happens.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2


def limit_malloc_arenas(count: int = ARENAS) -> bool:
    """Cap the arenas glibc creates from now on at `count`; True when it took effect."""
    if not sys.platform.startswith("linux") or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has mallopt too, and ignores it: returns 0)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_ARENA_MAX, count) == 1
