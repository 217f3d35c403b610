"""The executor caps glibc's malloc arenas (malloc_arenas.py): threads that allocate at once share two arenas
instead of one each, unless the user set MALLOC_ARENA_MAX. Checked in fresh processes with glibc's malloc_info."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.quick, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")]

COUNT_ARENAS = textwrap.dedent("""
    import ctypes, sys, tempfile, threading
    from snakemake_executor_plugin_azbatch.run.malloc_arenas import limit_malloc_arenas
    print(limit_malloc_arenas() if sys.argv[1] == "limit" else None)
    barrier, keep = threading.Barrier(8), []

    def allocate():  # eight threads allocating at the same moment
        barrier.wait()
        keep.extend(bytearray(2000) for _ in range(2000))

    threads = [threading.Thread(target=allocate) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    path = tempfile.mktemp()
    stream = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    print(open(path).read().count("<heap nr="))
""")


def arenas(mode: str, **env: str) -> tuple[str, int]:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    out = subprocess.run([sys.executable, "-c", COUNT_ARENAS, mode], capture_output=True, text=True, check=True,
                         env=environment, timeout=60).stdout.split()
    return out[0], int(out[1])


def test_threads_share_two_arenas_once_limited():
    assert arenas("limit") == ("True", 2)
    took, unlimited = arenas("leave")
    assert unlimited > 2  # without the cap, glibc gives the concurrent threads arenas of their own


def test_the_users_malloc_arena_max_stands():
    took, count = arenas("limit", MALLOC_ARENA_MAX="3")
    assert took == "False" and count == 3
