"""The execution seam and what runs tasks: node agent, host, stock-node and simulated backends."""
