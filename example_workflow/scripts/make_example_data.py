"""Regenerate data/: a two-contig reference, three samples' reads with planted SNPs, and the truth table.

Not part of the pipeline; kept so the inputs are reproducible: `python scripts/make_example_data.py`.
"""

from __future__ import annotations

import random
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"
CONTIGS = {"chr1": 1500, "chr2": 1000}
READ_LENGTH = 60
READS_PER_SAMPLE = 360
ERROR_RATE = 0.005
# Planted SNPs per sample: (contig, 1-based position); the alt base is drawn. Sample C carries none.
SNPS = {
    "A": [("chr1", 301), ("chr1", 902), ("chr2", 455)],
    "B": [("chr1", 902), ("chr2", 120)],
    "C": [],
}


def write_fasta(path: Path, contigs: dict[str, str]) -> None:
    with path.open("w") as out:
        for name, seq in contigs.items():
            out.write(f">{name}\n")
            for i in range(0, len(seq), 60):
                out.write(seq[i : i + 60] + "\n")


def main() -> None:
    rng = random.Random(2024)
    reference = {name: "".join(rng.choice("ACGT") for _ in range(n)) for name, n in CONTIGS.items()}
    write_fasta(DATA / "reference.fa", reference)
    truth = []
    for sample, snps in SNPS.items():
        genome = {name: list(seq) for name, seq in reference.items()}
        for contig, pos in snps:
            ref = genome[contig][pos - 1]
            alt = rng.choice([b for b in "ACGT" if b != ref])
            genome[contig][pos - 1] = alt
            truth.append((sample, contig, pos, ref, alt))
        weights = [len(s) for s in genome.values()]
        with (DATA / f"{sample}.fastq").open("w") as out:
            for i in range(READS_PER_SAMPLE):
                contig = rng.choices(list(genome), weights=weights)[0]
                start = rng.randrange(len(genome[contig]) - READ_LENGTH + 1)
                bases = genome[contig][start : start + READ_LENGTH]
                bases = [rng.choice("ACGT") if rng.random() < ERROR_RATE else b for b in bases]
                # A third of the reads end in a low-quality tail (Phred 2-9), which the trim step removes.
                quals = [rng.randint(30, 40) for _ in bases]
                if rng.random() < 0.33:
                    tail = rng.randint(5, 15)
                    quals[-tail:] = [rng.randint(2, 9) for _ in range(tail)]
                    bases[-tail:] = [rng.choice("ACGT") for _ in range(tail)]
                out.write(f"@{sample}_{i}\n{''.join(bases)}\n+\n{''.join(chr(q + 33) for q in quals)}\n")
    with (DATA / "truth_variants.tsv").open("w") as out:
        out.write("sample\tcontig\tposition\tref\talt\n")
        for row in truth:
            out.write("\t".join(map(str, row)) + "\n")


if __name__ == "__main__":
    main()
