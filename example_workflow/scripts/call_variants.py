"""Call SNVs from a pileup of aligned reads: an alt base seen in enough reads, at a high enough fraction."""

from __future__ import annotations

import argparse
import csv
from collections import Counter

from seqio import read_fasta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("reference")
    parser.add_argument("alignments")
    parser.add_argument("output")
    parser.add_argument("--sample", required=True)
    parser.add_argument("--min-depth", type=int, default=3)
    parser.add_argument("--min-fraction", type=float, default=0.7)
    args = parser.parse_args()
    reference = read_fasta(args.reference)
    pileup: dict[tuple[str, int], Counter[str]] = {}
    with open(args.alignments) as rows:
        for row in csv.DictReader(rows, delimiter="\t"):
            start = int(row["position"])
            for offset, base in enumerate(row["sequence"]):
                pileup.setdefault((row["contig"], start + offset), Counter())[base] += 1
    calls = []
    for (contig, position), bases in sorted(pileup.items()):
        ref = reference[contig][position - 1]
        depth = sum(bases.values())
        alt, alt_count = max(((b, n) for b, n in bases.items() if b != ref), key=lambda x: x[1], default=("", 0))
        if depth >= args.min_depth and alt_count / depth >= args.min_fraction:
            calls.append((args.sample, contig, position, ref, alt, depth, alt_count))
    with open(args.output, "w") as out:
        out.write("sample\tcontig\tposition\tref\talt\tdepth\talt_reads\n")
        out.writelines("\t".join(map(str, call)) + "\n" for call in calls)
    print(f"call_variants {args.sample}: {len(calls)} SNVs (min depth {args.min_depth}, min fraction {args.min_fraction})")


if __name__ == "__main__":
    main()
