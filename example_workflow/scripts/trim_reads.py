"""Trim low-quality 3' tails and drop reads that end up too short."""

from __future__ import annotations

import argparse

from seqio import Read, read_fastq, write_fastq


def trim(read: Read, min_quality: int) -> Read:
    end = len(read.sequence)
    while end > 0 and ord(read.qualities[end - 1]) - 33 < min_quality:
        end -= 1
    return Read(read.name, read.sequence[:end], read.qualities[:end])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("reads")
    parser.add_argument("output")
    parser.add_argument("--min-quality", type=int, default=20)
    parser.add_argument("--min-length", type=int, default=30)
    args = parser.parse_args()
    raw = list(read_fastq(args.reads))
    trimmed = [t for t in (trim(r, args.min_quality) for r in raw) if len(t.sequence) >= args.min_length]
    write_fastq(args.output, trimmed)
    cut = sum(len(r.sequence) for r in raw) - sum(len(t.sequence) for t in trimmed)
    print(f"trim: {len(raw)} reads in, {len(trimmed)} kept, {cut} bases removed (min quality {args.min_quality})")


if __name__ == "__main__":
    main()
