"""Workflow documents used in the docs (and run by tests/integration/test_workflows_docs.py)."""
