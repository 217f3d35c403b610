"""The HTTP server: socket, request bounds, the route table, dispatch, faults, outages, metrics."""
