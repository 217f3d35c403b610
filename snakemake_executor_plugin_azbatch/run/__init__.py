"""What a run does over time: preflight of its pools and nodes, submission, status rounds and results, progress,
outages, node health, crash recovery, link renewal, the heartbeat and how the run ends."""
