"""What a pool's VM size offers a task: vCPUs, memory, the temporary (resource) disk where Batch puts task
directories on Linux, GPUs. A built-in table of common Batch sizes (Azure's published figures; memory and disk in
MiB as 1 GiB = 1024 MiB), extended or overridden by --azbatch-vm-sizes `NAME=CORES:MEM_MB:DISK_MB[:GPUS]`."""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024


@dataclass(frozen=True)
class VmSize:
    name: str
    cores: int
    mem_mb: int
    disk_mb: int | None  # None: no temporary disk (task directories on the OS disk, size unknown here)
    gpus: int = 0


def _table() -> dict[str, VmSize]:
    rows = [
        # name, vCPUs, memory GiB, temporary disk GiB (None: none), GPUs
        ("standard_a1_v2", 1, 2, 10, 0), ("standard_a2_v2", 2, 4, 20, 0), ("standard_a4_v2", 4, 8, 40, 0),
        ("standard_a8_v2", 8, 16, 80, 0),
        ("standard_d2_v3", 2, 8, 50, 0), ("standard_d4_v3", 4, 16, 100, 0), ("standard_d8_v3", 8, 32, 200, 0),
        ("standard_d16_v3", 16, 64, 400, 0),
        ("standard_d2s_v3", 2, 8, 16, 0), ("standard_d4s_v3", 4, 16, 32, 0), ("standard_d8s_v3", 8, 32, 64, 0),
        ("standard_d16s_v3", 16, 64, 128, 0), ("standard_d32s_v3", 32, 128, 256, 0),
        ("standard_d2s_v5", 2, 8, None, 0), ("standard_d4s_v5", 4, 16, None, 0), ("standard_d8s_v5", 8, 32, None, 0),
        ("standard_d16s_v5", 16, 64, None, 0),
        ("standard_d2ds_v5", 2, 8, 75, 0), ("standard_d4ds_v5", 4, 16, 150, 0), ("standard_d8ds_v5", 8, 32, 300, 0),
        ("standard_d16ds_v5", 16, 64, 600, 0),
        ("standard_e2s_v3", 2, 16, 32, 0), ("standard_e4s_v3", 4, 32, 64, 0), ("standard_e8s_v3", 8, 64, 128, 0),
        ("standard_e16s_v3", 16, 128, 256, 0),
        ("standard_f2s_v2", 2, 4, 16, 0), ("standard_f4s_v2", 4, 8, 32, 0), ("standard_f8s_v2", 8, 16, 64, 0),
        ("standard_f16s_v2", 16, 32, 128, 0),
        ("standard_nc6s_v3", 6, 112, 736, 1), ("standard_nc12s_v3", 12, 224, 1474, 2),
        ("standard_nc4as_t4_v3", 4, 28, 180, 1), ("standard_nc8as_t4_v3", 8, 56, 360, 1),
        ("standard_nc24ads_a100_v4", 24, 220, 64, 1),
    ]
    return {
        name: VmSize(name, cores, mem * GIB, None if disk is None else disk * GIB, gpus)
        for name, cores, mem, disk, gpus in rows
    }


BUILT_IN = _table()


class VmSizeError(ValueError):
    """A bad --azbatch-vm-sizes entry; one line."""


def parse_overrides(entries: list[str] | tuple[str, ...]) -> dict[str, VmSize]:
    sizes = {}
    for entry in entries:
        name, sep, figures = entry.partition("=")
        parts = figures.split(":")
        try:
            if not sep or not name.strip() or len(parts) not in (3, 4):
                raise ValueError
            cores, mem, disk = int(parts[0]), int(parts[1]), int(parts[2])
            gpus = int(parts[3]) if len(parts) == 4 else 0
            if min(cores, mem, disk, gpus) < 0 or cores == 0:
                raise ValueError
        except ValueError:
            raise VmSizeError(
                f"azbatch: --azbatch-vm-sizes entry {entry!r} is not NAME=CORES:MEM_MB:DISK_MB[:GPUS] "
                "(e.g. standard_d4s_v3=4:16384:32768)"
            ) from None
        key = name.strip().lower()
        sizes[key] = VmSize(key, cores, mem, disk, gpus)
    return sizes


def lookup(name: str | None, overrides: dict[str, VmSize]) -> VmSize | None:
    key = (name or "").lower()
    return overrides.get(key) or BUILT_IN.get(key)
