"""Helpers the tests share: services, runs of `snakemake`, waiting, processes, spec validation."""
