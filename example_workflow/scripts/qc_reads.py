"""Read-level QC of one sample (a `script:` step: Snakemake passes the `snakemake` object)."""


import json
import sys


def fastq_stats(path: str) -> dict[str, float]:
    reads = bases = gc = quality_sum = 0
    with open(path) as lines:
        for number, line in enumerate(lines):
            if number % 4 == 1:
                sequence = line.strip()
                reads += 1
                bases += len(sequence)
                gc += sequence.count("G") + sequence.count("C")
            elif number % 4 == 3:
                quality_sum += sum(ord(c) - 33 for c in line.strip())
    return {
        "reads": reads,
        "bases": bases,
        "gc_fraction": round(gc / bases, 4) if bases else 0.0,
        "mean_quality": round(quality_sum / bases, 2) if bases else 0.0,
    }


snakemake = globals()["snakemake"]  # injected by Snakemake's script: directive
with open(snakemake.log[0], "w") as log:
    stats = {"sample": snakemake.wildcards.sample, **fastq_stats(snakemake.input.reads)}
    print(f"qc {snakemake.input.reads}: {stats}", file=log)
with open(snakemake.output.stats, "w") as out:
    json.dump(stats, out, indent=2)
print(f"qc done for {stats['sample']}", file=sys.stderr)
