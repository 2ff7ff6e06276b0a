"""The planner: expected peak memory, time and tokens of a run, before any weight is loaded (`tuneforge plan`)."""
