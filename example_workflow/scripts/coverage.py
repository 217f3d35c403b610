"""Per-base depth of coverage, one TSV per contig, in an output directory."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from seqio import read_fasta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("reference")
    parser.add_argument("alignments")
    parser.add_argument("outdir")
    args = parser.parse_args()
    reference = read_fasta(args.reference)
    depth = {contig: [0] * len(sequence) for contig, sequence in reference.items()}
    with open(args.alignments) as rows:
        for row in csv.DictReader(rows, delimiter="\t"):
            start = int(row["position"]) - 1
            for i in range(start, start + len(row["sequence"])):
                depth[row["contig"]][i] += 1
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    for contig, values in depth.items():
        with (outdir / f"{contig}.depth.tsv").open("w") as out:
            out.write("position\tdepth\n")
            out.writelines(f"{i + 1}\t{d}\n" for i, d in enumerate(values))
        print(f"coverage {contig}: mean depth {sum(values) / len(values):.2f}")


if __name__ == "__main__":
    main()
