"""Workflows: named steps (jobs) with dependencies, references to upstream results, conditions
and failure policies, submitted as one document and run by the store's blocked jobs.

`document.py` is the format, `graph.py` checks it, `service.py` submits and manages workflows,
`decide.py` and `gate.py` decide at claim time whether a step runs, `status.py` derives a
workflow's state from its steps.
"""

from conveyor.workflows.builder import Flow, ref
from conveyor.workflows.document import Step, WorkflowSubmit
from conveyor.workflows.views import Workflow, WorkflowPage, WorkflowStep

__all__ = ["Flow", "Step", "Workflow", "WorkflowPage", "WorkflowStep", "WorkflowSubmit", "ref"]
