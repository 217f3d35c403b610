"""What a pool is, without talking to Batch: the body of a pool the run creates and the VM size table."""
