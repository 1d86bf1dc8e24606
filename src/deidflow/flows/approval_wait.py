"""`deidflow approve` / `reject` resume a paused release run through this path; the code
lives with the release flow, in `flows/approval_wait.py`."""

from flows.approval_wait import resume_if_paused

__all__ = ["resume_if_paused"]
