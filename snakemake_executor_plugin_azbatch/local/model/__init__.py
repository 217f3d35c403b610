"""The Batch account model: state, validation, records, the task state machine, scheduling, pools."""
