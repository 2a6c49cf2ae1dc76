"""Each workflow type's Worker Versioning behaviour, chosen for how long its runs live.

A versioned worker (`cidsync worker --deployment-name --build-id`) runs each type as its definition says:

- `SHORT_RUN` (PINNED): CreateCID, UpdateCID, ApplyCIDBatch, CheckVerificationFreshness. Runs of seconds
  (a batch: minutes under a backlog) end on the build they started on, so a change to them needs no patch;
  the old version's workers stay until its pinned runs drain (`temporal worker deployment describe-version`).
- `LONG_WAIT` (AUTO_UPGRADE): DeleteCID (a WAITING_PERIOD delete waits 30 days), ReconcileVSync (an
  approval waits up to 3 days), VerifyAllPairs (waits for its ReconcileVSync children). Pinned, they would
  hold an old version's workers for days; they move to the current version at their next task instead,
  so every change to them is gated by `workflow.patched` and checked by the replay gate (README,
  "Changing a workflow").
- `FOLLOWER` (PINNED, upgraded at continue-as-new): FollowCidEvents runs for ever in runs of a few hours.
  Each run stays on its build; when the task queue's target version changes the run ends early and
  continues as new on the new one (`workflow.ContinueAsNewVersioningBehavior.AUTO_UPGRADE`), so a change
  to it needs no patch either.

Children, as Temporal's documentation describes them (not tested here): a child of a PINNED parent on the
same task queue starts on the parent's version (the follower's hand-over ReconcileVSync), a child of an
AUTO_UPGRADE parent on the current version (VerifyAllPairs' reconciliations).
"""

from __future__ import annotations

from temporalio.common import VersioningBehavior

SHORT_RUN = VersioningBehavior.PINNED
LONG_WAIT = VersioningBehavior.AUTO_UPGRADE
FOLLOWER = VersioningBehavior.PINNED
