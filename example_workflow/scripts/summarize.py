"""Gather every sample into a summary table, one variants table and a coverage plot (a `script:` step)."""


import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # nodes have no display
import matplotlib.pyplot as plt  # noqa: E402

snakemake = globals()["snakemake"]  # injected by Snakemake's script: directive
samples: list[str] = snakemake.params.samples


def count_fastq_reads(path: str) -> int:
    with open(path) as lines:
        return sum(1 for _ in lines) // 4


def read_depths(directory: str) -> dict[str, list[int]]:
    return {
        path.name.removesuffix(".depth.tsv"): [int(r["depth"]) for r in csv.DictReader(path.open(), delimiter="\t")]
        for path in sorted(Path(directory).glob("*.depth.tsv"))
    }


rows, variant_rows, depths = [], [], {}
for sample, qc, trimmed, aligned, coverage, variants in zip(
    samples,
    snakemake.input.qc,
    snakemake.input.trimmed,
    snakemake.input.aligned,
    snakemake.input.coverage,
    snakemake.input.variants,
):
    stats = json.loads(Path(qc).read_text())
    depths[sample] = read_depths(coverage)
    all_depths = [d for contig in depths[sample].values() for d in contig]
    with open(variants) as handle:
        calls = list(csv.DictReader(handle, delimiter="\t"))
    variant_rows.extend(calls)
    with open(aligned) as handle:
        mapped = sum(1 for _ in handle) - 1
    rows.append(
        {
            "sample": sample,
            "raw_reads": stats["reads"],
            "mean_quality": stats["mean_quality"],
            "gc_fraction": stats["gc_fraction"],
            "trimmed_reads": count_fastq_reads(trimmed),
            "mapped_reads": mapped,
            "mean_depth": round(sum(all_depths) / len(all_depths), 2),
            "snvs": len(calls),
        }
    )

with open(snakemake.output.table, "w", newline="") as out:
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
with open(snakemake.output.variants, "w", newline="") as out:
    writer = csv.DictWriter(
        out,
        fieldnames=["sample", "contig", "position", "ref", "alt", "depth", "alt_reads"],
        delimiter="\t",
        lineterminator="\n",
    )
    writer.writeheader()
    writer.writerows(variant_rows)

contigs = sorted({contig for per_sample in depths.values() for contig in per_sample})
figure, axes = plt.subplots(len(contigs), 1, figsize=(8, 2.5 * len(contigs)), squeeze=False)
for axis, contig in zip(axes[:, 0], contigs):
    for sample in samples:
        axis.plot(range(1, len(depths[sample][contig]) + 1), depths[sample][contig], label=sample, linewidth=0.8)
    for call in variant_rows:
        if call["contig"] == contig:
            axis.axvline(int(call["position"]), color="grey", linestyle=":", linewidth=0.8)
    axis.set_title(f"{contig}: depth of coverage (dotted: SNV calls)")
    axis.set_xlabel("position")
    axis.set_ylabel("depth")
axes[0, 0].legend(loc="upper right")
figure.tight_layout()
figure.savefig(snakemake.output.plot, dpi=100)
with open(snakemake.log[0], "w") as log:
    for row in rows:
        print("summary", row, file=log)
    print(f"wrote {snakemake.output.table}, {snakemake.output.variants}, {snakemake.output.plot}", file=log)
