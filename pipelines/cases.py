"""Case states, verdicts, and the case commands: list, show, close (销号), reopen.

The status vocabulary is small, documented in ``docs/cases_and_tasks.md`` and versioned with
the ledger schema (see :data:`tuban.pipelines.ledger.SCHEMA_VERSION`):

============  ====================================================================
status        meaning
============  ====================================================================
open          found by triage (or re-dispatch needed), waiting for a task pack
dispatched    in a task pack on an officer's phone
review        needs a bureau decision: conflicting verdicts, suspicious photos,
              ``not_found``, or the place was found again after closure
confirmed     officer verdict ``confirmed_illegal``: awaiting enforcement
rectified     officer verdict ``rectified``: watched against re-stocking
dismissed     officer verdict ``legal`` or ``false_change``
closed        closed (销号) by the bureau with a reason; watched against re-stocking
restocked     re-watch saw water back in a closed/rectified pond; goes into the next packs
============  ====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd

from tuban import LedgerError
from tuban.pipelines.ledger import open_ledger, utc_now

__all__ = [
    "STATUSES",
    "VERDICTS",
    "VERDICT_STATUS",
    "DISPATCHABLE",
    "WATCHED",
    "WATCHED_KINDS",
    "NOT_RESTOCKABLE_VERDICTS",
    "CaseDetail",
    "list_cases",
    "show_case",
    "close_case",
    "reopen_case",
    "REOPENABLE",
]

STATUSES = ("open", "dispatched", "review", "confirmed", "rectified", "dismissed", "closed", "restocked")
#: Verdicts an officer can return, and the case status each leads to.
VERDICT_STATUS: dict[str, str] = {
    "confirmed_illegal": "confirmed",
    "legal": "dismissed",
    "false_change": "dismissed",
    "rectified": "rectified",
    "not_found": "review",
    "unreachable": "open",
}
VERDICTS = tuple(VERDICT_STATUS)
#: Statuses that go into the next task pack.
DISPATCHABLE = ("open", "restocked")
#: Statuses that re-watch checks against re-stocking.
WATCHED = ("closed", "rectified")
#: Case kinds that are ponds (re-watch checks only these: water in a closed new_water case is no
#: re-stocking, and neither is water in a pond verified legal or a false change).
WATCHED_KINDS = ("new_pond", "removed_pond", "drained_pond", "pond")
NOT_RESTOCKABLE_VERDICTS = ("legal", "false_change")
#: Decided statuses ``cases reopen`` accepts (a dispatched case only with ``pack_lost``).
REOPENABLE = ("closed", "rectified", "dismissed", "confirmed", "review", "restocked")


@dataclass(frozen=True)
class CaseDetail:
    """One case with its evidence, tasks, verdict history and status history."""

    case: dict[str, Any]
    evidence: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    verdicts: list[dict[str, Any]]
    events: list[dict[str, Any]]


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise LedgerError(f"unknown status {status!r} (one of: {', '.join(STATUSES)})")


def list_cases(ledger_path: str | Path, *, status: str | None = None,
               grid_id: str | None = None) -> gpd.GeoDataFrame:
    """Cases of the ledger (EPSG:4326), optionally only those with ``status`` / in ``grid_id``."""
    where, params = [], []
    if status:
        _check_status(status)
        where.append("status = ?")
        params.append(status)
    if grid_id:
        where.append("grid_id = ?")
        params.append(grid_id)
    with open_ledger(ledger_path) as led:
        return led.cases(" AND ".join(where), params)


def show_case(ledger_path: str | Path, case_id: str) -> CaseDetail:
    """Everything the ledger knows about one case."""
    with open_ledger(ledger_path) as led:
        case = led.case(case_id)
        q = "WHERE case_id = ? ORDER BY fid"
        return CaseDetail(
            case=case,
            evidence=led.rows(f"SELECT kind, source_id, path, rank_key, properties FROM evidence {q}", (case_id,)),
            tasks=led.rows(f"SELECT task_id, pack_id, status, dispatched_at, returned_at FROM tasks {q}", (case_id,)),
            verdicts=led.rows("SELECT task_id, verdict, verified_by, verified_at, note, photos, flags, "
                              f"imported_at FROM verdicts {q}", (case_id,)),
            events=led.rows(f"SELECT at, event, from_status, to_status, detail FROM events {q}", (case_id,)),
        )


def close_case(ledger_path: str | Path, case_id: str, reason: str, *, at: str | None = None) -> str:
    """Close (销号) a case with a reason; returns its previous status.

    Raises:
        LedgerError: unknown case, empty reason, or the case is already closed.
    """
    if not reason or not reason.strip():
        raise LedgerError("closing a case needs a reason")
    with open_ledger(ledger_path) as led, led.transaction():
        before = led.case(case_id)["status"]
        if before == "closed":
            raise LedgerError(f"case {case_id} is already closed")
        led.set_status(case_id, "closed", "closed", detail=reason.strip(), at=at,
                       closed_reason=reason.strip(), review_flag=0)
    return before


def reopen_case(ledger_path: str | Path, case_id: str, *, reason: str = "reopened by user",
                at: str | None = None, pack_lost: bool = False) -> str:
    """Reopen a decided case (status ``open``, back into the next packs); returns its previous status.

    Only decided cases (:data:`REOPENABLE`: closed, rectified, dismissed, confirmed, review,
    restocked) can be reopened. A ``dispatched`` case is in an officer's pack: reopening it would
    export it twice, so it is refused unless ``pack_lost`` says the pack was lost (the next
    export then gives it a new task).

    Raises:
        LedgerError: unknown case, or a case that is open or (without ``pack_lost``) dispatched.
    """
    with open_ledger(ledger_path) as led, led.transaction():
        before = led.case(case_id)["status"]
        if before == "open":
            raise LedgerError(f"case {case_id} is already open")
        if before == "dispatched" and not pack_lost:
            raise LedgerError(f"case {case_id} is dispatched (in an officer's task pack), not closed or decided; "
                              "import its verdict first, or pass --pack-lost if that pack was lost")
        if before not in (*REOPENABLE, "dispatched"):
            raise LedgerError(f"case {case_id} is {before}; only {', '.join(REOPENABLE)} cases can be reopened")
        led.set_status(case_id, "open", "reopened", detail=reason, at=at or utc_now(),
                       closed_reason=None)
    return before
