"""Snakemake executor plugin: run jobs as Azure Batch tasks on a pre-created pool."""
