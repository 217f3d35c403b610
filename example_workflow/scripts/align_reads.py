"""A toy seed-and-extend aligner: exact k-mer seeds, then the placement with the fewest mismatches.

Uses --threads worker processes, so the rule's `threads:` really is used on the node.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor

from seqio import read_fasta, read_fastq

SEED = 15
MAX_MISMATCHES = 4

_reference: dict[str, str] = {}
_index: dict[str, list[tuple[str, int]]] = {}


def load_reference(path: str) -> None:
    _reference.update(read_fasta(path))
    for contig, sequence in _reference.items():
        for start in range(len(sequence) - SEED + 1):
            _index.setdefault(sequence[start : start + SEED], []).append((contig, start))


def align(read: tuple[str, str]) -> tuple[str, str, int, int, str] | None:
    """Return (name, contig, 0-based start, mismatches, sequence) or None when unmapped."""
    name, sequence = read
    candidates: set[tuple[str, int]] = set()
    for offset in range(0, len(sequence) - SEED + 1, SEED):
        for contig, start in _index.get(sequence[offset : offset + SEED], ()):
            if start - offset >= 0:
                candidates.add((contig, start - offset))
    best = None
    for contig, start in sorted(candidates):
        window = _reference[contig][start : start + len(sequence)]
        if len(window) < len(sequence):
            continue
        mismatches = sum(a != b for a, b in zip(sequence, window))
        if mismatches <= MAX_MISMATCHES and (best is None or mismatches < best[3]):
            best = (name, contig, start, mismatches, sequence)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("reference")
    parser.add_argument("reads")
    parser.add_argument("output")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    reads = [(r.name, r.sequence) for r in read_fastq(args.reads)]
    with ProcessPoolExecutor(
        max_workers=args.threads, initializer=load_reference, initargs=(args.reference,)
    ) as pool:
        results = list(pool.map(align, reads, chunksize=64))
    mapped = [r for r in results if r is not None]
    with open(args.output, "w") as out:
        out.write("read\tcontig\tposition\tmismatches\tsequence\n")
        for name, contig, start, mismatches, sequence in mapped:
            out.write(f"{name}\t{contig}\t{start + 1}\t{mismatches}\t{sequence}\n")
    print(f"align: {len(reads)} reads, {len(mapped)} mapped, {args.threads} worker processes")


if __name__ == "__main__":
    main()
