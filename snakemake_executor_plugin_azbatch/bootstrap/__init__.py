"""How the run's Snakemake (and conda / apptainer) reach stock nodes: the node-side scripts (`node_script`, pure)
and the files the submitting machine makes for them (`wheelhouse`: the uv binary, the offline wheelhouse)."""
