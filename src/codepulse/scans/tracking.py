"""How what a scan saw carries over into the repository's tracked findings: pure decisions, no
session and no I/O (the worker's lifecycle applies them, see `lifecycle.complete_scan`).

Per fingerprint the scan saw, given the tracked finding with that fingerprint (if any). A scan of
one commit sees everything at the head; a history scan also sees findings only in the history
(`at_head` false):

| scan of        | seen       | tracked finding         | change   | status after | new | counted open |
|----------------|------------|-------------------------|----------|--------------|-----|--------------|
| default branch | at head    | none                    | opened   | open         | yes | yes          |
| default branch | at head    | open                    | seen     | open         | no  | yes          |
| default branch | at head    | in history              | seen     | open         | no  | yes          |
| default branch | at head    | fixed                   | reopened | open         | yes | yes          |
| default branch | in history | none                    | opened   | in_history   | yes | yes          |
| default branch | in history | open, in history, fixed | seen     | in_history   | no  | yes          |
| default branch | either     | ignored/false positive  | seen     | (unchanged)  | no  | no           |
| another ref    | either     | none                    | recorded | open         | yes | yes          |
| another ref    | either     | open / in history       | recorded | (unchanged)  | no  | yes          |
| another ref    | either     | fixed                   | recorded | fixed        | yes | yes          |
| another ref    | either     | ignored/false positive  | recorded | (unchanged)  | no  | no           |

"seen" and "reopened" move the tracked finding's location and last-seen scan (and set its
status); "reopened" also clears its fix and counts one more reopening (a regression). A secret
that was fixed at the head and that a history scan then finds in the history is not new: it is
still leaked, so it is `in_history` (rotate it). Triage (a dismissal, its reason) is never
changed by a scan. A scan of another ref changes no tracked finding: it records what it saw,
linked to the tracked finding when there is one.

The remaining rule concerns findings the scan did NOT see, which are not loaded: on the default
branch every open tracked finding not seen becomes fixed, and after a history scan every
`in_history` one too (the history was rewritten) — `ScanRepository.fix_unseen`, one UPDATE.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from codepulse.scans.models import FindingStatus, stored_severity, zero_counts
from codepulse.scans.results import LocatedFinding


@dataclass(frozen=True, slots=True)
class Tracked:
    """A tracked finding as the repository had it before the scan."""

    id: uuid.UUID
    status: FindingStatus
    reopened_count: int


class Change(StrEnum):
    OPENED = "opened"
    """First seen on the default branch: a new tracked finding, open."""
    SEEN = "seen"
    """Tracked, seen again on the default branch: its location and last-seen scan move."""
    REOPENED = "reopened"
    """Fixed, seen again on the default branch: open again."""
    RECORDED = "recorded"
    """Seen by a scan of another ref: recorded with the scan only."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one finding the scan saw means for the tracked findings and the scan's counts."""

    found: LocatedFinding
    tracked: Tracked | None
    change: Change
    status: FindingStatus
    """The tracked finding's status after the scan (open when there is none)."""
    new: bool
    """New in this scan: first seen, or back after being fixed (never a dismissed one)."""

    @property
    def counted(self) -> bool:
        """Counted among the scan's open findings: anything not dismissed."""
        return not self.status.dismissed

    @property
    def severity(self) -> str:
        return stored_severity(self.found.severity)

    @property
    def reopened_count(self) -> int:
        """The tracked finding's reopenings after the scan."""
        previous = self.tracked.reopened_count if self.tracked is not None else 0
        return previous + 1 if self.change is Change.REOPENED else previous


def unique(findings: Iterable[LocatedFinding]) -> list[LocatedFinding]:
    """One finding per fingerprint (the first in path and position order), in that order."""
    ordered = sorted(findings, key=lambda item: (item.path, item.finding.start_line, item.finding.start_column))
    first: dict[str, LocatedFinding] = {}
    for item in ordered:
        first.setdefault(item.fingerprint, item)
    return list(first.values())


def outcome(found: LocatedFinding, tracked: Tracked | None, *, default_branch: bool) -> Outcome:
    """The table of the module docstring, for one finding the scan saw."""
    here = FindingStatus.OPEN if found.at_head else FindingStatus.IN_HISTORY
    if tracked is None:
        change = Change.OPENED if default_branch else Change.RECORDED
        return Outcome(found, None, change, here if default_branch else FindingStatus.OPEN, new=True)
    was_fixed = tracked.status is FindingStatus.FIXED
    if not default_branch:
        return Outcome(found, tracked, Change.RECORDED, tracked.status, new=was_fixed)
    if tracked.status.dismissed:
        return Outcome(found, tracked, Change.SEEN, tracked.status, new=False)
    if was_fixed and found.at_head:
        return Outcome(found, tracked, Change.REOPENED, FindingStatus.OPEN, new=True)
    return Outcome(found, tracked, Change.SEEN, here, new=False)


def carry_over(
    found: Sequence[LocatedFinding], tracked: Mapping[str, Tracked], *, default_branch: bool
) -> list[Outcome]:
    """The outcome of every finding a scan saw (one per fingerprint, see `unique`), given the
    repository's tracked findings by fingerprint."""
    return [outcome(item, tracked.get(item.fingerprint), default_branch=default_branch) for item in unique(found)]


def scan_counts(outcomes: Iterable[Outcome]) -> tuple[dict[str, int], dict[str, int]]:
    """(new, open) findings of the scan by severity."""
    new_counts, open_counts = zero_counts(), zero_counts()
    for item in outcomes:
        if item.counted:
            open_counts[item.severity] += 1
            if item.new:
                new_counts[item.severity] += 1
    return new_counts, open_counts
