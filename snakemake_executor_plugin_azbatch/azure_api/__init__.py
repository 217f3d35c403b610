"""Talking to Azure through its SDKs: call behaviour and error text, credentials, the Batch client and the job
quota wait. Nothing here knows what a run is."""
