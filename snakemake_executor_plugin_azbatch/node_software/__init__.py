"""What Batch nodes run, known to both wings: the python3 of Marketplace images (the plugin picks the nodes'
Python by it; the local service refuses an image its nodes cannot stand in for) and the offline wheelhouse (the
plugin ships it to offline nodes; the local service builds it into its Snakemake container image). Imports
nothing of either wing, so neither wing imports the other's internals."""
