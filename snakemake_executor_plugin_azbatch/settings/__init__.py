"""Settings as Snakemake sees them: `ExecutorSettings` (every default stated once), its generated docs table, and
which environment variables hide a profile key."""
