"""The seed systems' own APIs, mapped onto conveyor jobs."""
