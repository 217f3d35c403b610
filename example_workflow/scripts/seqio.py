"""FASTA / FASTQ reading and writing shared by the command-line steps (they run as `python scripts/NAME.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple


class Read(NamedTuple):
    name: str
    sequence: str
    qualities: str  # Phred+33


def read_fasta(path: str | Path) -> dict[str, str]:
    contigs: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in Path(path).read_text().splitlines():
        if line.startswith(">"):
            current = contigs.setdefault(line[1:].split()[0], [])
        elif line.strip():
            if current is None:
                raise ValueError(f"{path}: sequence before the first '>' header; is this a FASTA file?")
            current.append(line.strip().upper())
    return {name: "".join(parts) for name, parts in contigs.items()}


def read_fastq(path: str | Path) -> Iterator[Read]:
    with open(path) as lines:
        while header := lines.readline().rstrip("\n"):
            sequence, _, qualities = (lines.readline().rstrip("\n") for _ in range(3))
            if not header.startswith("@") or len(sequence) != len(qualities):
                raise ValueError(f"{path}: malformed FASTQ record {header!r}")
            yield Read(header[1:], sequence, qualities)


def write_fastq(path: str | Path, reads: list[Read]) -> None:
    with open(path, "w") as out:
        for read in reads:
            out.write(f"@{read.name}\n{read.sequence}\n+\n{read.qualities}\n")
