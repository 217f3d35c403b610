"""A Snakemake job as a Batch task: the task body (pure), the resource check against its VM size, the output check
after download."""
