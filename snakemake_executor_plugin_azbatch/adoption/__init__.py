"""Adoption: a run that finds a dead earlier run of its workflow takes over that run's tasks whose content key
matches one of its own jobs (content_key.py: what a task computes; dead_tasks.py: which task a job takes;
takeover.py: listing, claiming, ending what nobody claimed)."""
