"""The web dashboard at `/ui`: overview, jobs, job pages, kinds with submit forms, workers."""
