"""Local Azure Batch-compatible service: the REST API on loopback, nodes as local processes, Azurite for blobs."""
