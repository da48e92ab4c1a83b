"""The findings' carry-over between scans as a pure function: the table of `tracking`'s docstring,
case by case, and its edges (duplicates, unknown severities, counts)."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from codepulse.scans.engine import RawFinding
from codepulse.scans.models import FindingDetails, FindingStatus, ScanFinding, zero_counts
from codepulse.scans.results import LocatedFinding
from codepulse.scans.tracking import Change, Outcome, Tracked, carry_over, outcome, scan_counts, unique


def _found(
    fingerprint: str = "fp", *, path: str = "app.py", line: int = 1, column: int = 1, severity: str = "high"
) -> LocatedFinding:
    raw = RawFinding(
        rule_id="rule",
        engine="secrets",
        severity=severity,
        title="Title",
        message="Message",
        start_line=line,
        end_line=line,
        start_column=column,
        end_column=column + 4,
        snippet="abcd****",
        cwe=None,
        fingerprint_basis="basis",
    )
    return LocatedFinding(path=path, finding=raw, fingerprint=fingerprint)


def _tracked(status: FindingStatus, reopened: int = 0) -> Tracked:
    return Tracked(id=uuid.uuid4(), status=status, reopened_count=reopened)


DISMISSED = (FindingStatus.IGNORED, FindingStatus.FALSE_POSITIVE)


OP, H, F, IG, FP = (
    FindingStatus.OPEN,
    FindingStatus.IN_HISTORY,
    FindingStatus.FIXED,
    FindingStatus.IGNORED,
    FindingStatus.FALSE_POSITIVE,
)

# (default branch, seen at the head, tracked status or None) -> (change, status after, new, counted)
TABLE = [
    (True, True, None, Change.OPENED, OP, True, True),
    (True, True, OP, Change.SEEN, OP, False, True),
    (True, True, H, Change.SEEN, OP, False, True),  # back at the head
    (True, True, F, Change.REOPENED, OP, True, True),
    (True, True, IG, Change.SEEN, IG, False, False),
    (True, True, FP, Change.SEEN, FP, False, False),
    (True, False, None, Change.OPENED, H, True, True),
    (True, False, OP, Change.SEEN, H, False, True),  # removed from the head since: rotate it
    (True, False, H, Change.SEEN, H, False, True),
    (True, False, F, Change.SEEN, H, False, True),  # fixed at the head, still leaked
    (True, False, IG, Change.SEEN, IG, False, False),
    (True, False, FP, Change.SEEN, FP, False, False),
    *[
        (False, at_head, before, Change.RECORDED, after, new, counted)
        for at_head in (True, False)
        for before, after, new, counted in [
            (None, OP, True, True),
            (OP, OP, False, True),
            (H, H, False, True),
            (F, F, True, True),
            (IG, IG, False, False),
            (FP, FP, False, False),
        ]
    ],
]


@pytest.mark.parametrize(("default_branch", "at_head", "before", "change", "after", "new", "counted"), TABLE)
def test_the_table(
    default_branch: bool,
    at_head: bool,
    before: FindingStatus | None,
    change: Change,
    after: FindingStatus,
    new: bool,
    counted: bool,
) -> None:
    tracked = _tracked(before) if before is not None else None
    found = dataclasses.replace(_found(), at_head=at_head)
    result = outcome(found, tracked, default_branch=default_branch)
    assert (result.change, result.status, result.new, result.counted) == (change, after, new, counted)
    assert result.tracked is tracked


def test_every_status_on_both_kinds_of_ref_and_at_both_places_is_in_the_table() -> None:
    cases = {(row[0], row[1], row[2]) for row in TABLE}
    assert len(cases) == len(TABLE)
    assert cases == {
        (branch, at_head, status)
        for branch in (True, False)
        for at_head in (True, False)
        for status in (None, *FindingStatus)
    }


def test_a_reopening_counts_one_more_regression() -> None:
    fixed = _tracked(FindingStatus.FIXED, reopened=2)
    assert outcome(_found(), fixed, default_branch=True).reopened_count == 3
    # Seen on another ref, or seen while open: the count stays.
    assert outcome(_found(), fixed, default_branch=False).reopened_count == 2
    assert outcome(_found(), _tracked(FindingStatus.OPEN, reopened=1), default_branch=True).reopened_count == 1
    assert outcome(_found(), None, default_branch=True).reopened_count == 0


@pytest.mark.parametrize("status", DISMISSED)
def test_a_dismissed_finding_is_never_new_nor_open_whatever_the_ref(status: FindingStatus) -> None:
    for default_branch in (True, False):
        result = outcome(_found(), _tracked(status), default_branch=default_branch)
        assert result.status is status
        assert not result.new
        assert not result.counted


def test_carry_over_matches_by_fingerprint_and_keeps_one_finding_per_fingerprint() -> None:
    known = _tracked(FindingStatus.OPEN)
    found = [
        _found("b", path="b.py"),
        _found("a", path="a.py", line=9),
        _found("a", path="a.py", line=2),  # the same fingerprint twice: the first in position order wins
    ]
    outcomes = carry_over(found, {"a": known}, default_branch=True)
    assert [(item.found.fingerprint, item.found.start_line, item.change) for item in outcomes] == [
        ("a", 2, Change.SEEN),
        ("b", 1, Change.OPENED),
    ]
    assert outcomes[0].tracked is known


def test_carry_over_of_nothing_is_nothing() -> None:
    assert carry_over([], {"a": _tracked(FindingStatus.OPEN)}, default_branch=True) == []
    assert scan_counts([]) == (zero_counts(), zero_counts())


def test_unique_orders_by_path_then_position() -> None:
    items = [_found("3", path="b.py"), _found("2", path="a.py", line=5, column=2), _found("1", path="a.py", line=5)]
    assert [item.fingerprint for item in unique(items)] == ["1", "2", "3"]


def test_counts_by_severity_with_unknown_severities_as_info() -> None:
    outcomes = [
        outcome(_found("1", severity="critical"), None, default_branch=True),  # new, open
        outcome(_found("2", severity="critical"), _tracked(FindingStatus.OPEN), default_branch=True),  # open
        outcome(_found("3", severity="weird"), None, default_branch=True),  # new, open, as info
        outcome(_found("4", severity="low"), _tracked(FindingStatus.IGNORED), default_branch=True),  # neither
        outcome(_found("5", severity="medium"), _tracked(FindingStatus.FIXED), default_branch=True),  # reopened
    ]
    new_counts, open_counts = scan_counts(outcomes)
    assert new_counts == {"critical": 1, "high": 0, "medium": 1, "low": 0, "info": 1}
    assert open_counts == {"critical": 2, "high": 0, "medium": 1, "low": 0, "info": 1}


def test_stored_columns_and_back() -> None:
    found = _found("fp", severity="weird")
    columns = FindingDetails.columns_of(found)
    assert columns["severity"] == "info"
    assert columns["severity_rank"] == 4
    assert (columns["fingerprint"], columns["path"], columns["start_line"]) == ("fp", "app.py", 1)
    row = ScanFinding(id=uuid.uuid4(), scan_id=uuid.uuid4(), finding_id=None, is_new=True, **columns)
    back = row.located()
    assert (back.fingerprint, back.path, back.rule_id, back.severity, back.snippet) == (
        "fp", "app.py", "rule", "info", "abcd****"
    )  # fmt: skip
    assert (back.start_line, back.end_line, back.start_column, back.end_column) == (1, 1, 1, 5)


def test_outcomes_are_values() -> None:
    tracked = _tracked(FindingStatus.OPEN)
    found = _found()
    assert outcome(found, tracked, default_branch=True) == Outcome(
        found, tracked, Change.SEEN, FindingStatus.OPEN, new=False
    )
