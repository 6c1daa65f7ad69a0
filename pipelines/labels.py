"""Verified cases as detector training labels.

``confirmed_illegal`` and ``rectified`` cases are positives (an aquaculture pond was there);
``false_change`` and ``legal`` cases are hard negatives (the change detector fired, but the
ground said no illegal pond; ``legal`` ponds are still ponds, so they are marked ``legal`` to let
a recipe choose to treat them as positives of a "pond" class). Unverified cases are left out.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd

from tuban.imagery.vector_io import write_geojson
from tuban.pipelines.ledger import open_ledger

__all__ = ["POSITIVE", "NEGATIVE", "case_labels", "write_labels"]

POSITIVE = ("confirmed_illegal", "rectified")
NEGATIVE = ("false_change", "legal")
_COLUMNS = ["case_id", "label", "positive", "negative", "verdict", "kind", "score", "area_m2", "before_date", "after_date",
            "raster_before", "raster_after", "verified_at"]


def case_labels(ledger_path: str | Path) -> gpd.GeoDataFrame:
    """Labelled case polygons (EPSG:4326): ``label`` is ``pond`` or ``hard_negative``.

    ``negative`` is True for hard negatives, which is what ``tuban model dataset`` reads: they
    become chips with empty labels, never a second class.
    """
    verdicts = (*POSITIVE, *NEGATIVE)
    with open_ledger(ledger_path) as led:
        cases = led.cases(f"verdict IN ({', '.join('?' * len(verdicts))}) AND status != 'review'", list(verdicts))
    cases["positive"] = cases["verdict"].isin(POSITIVE)
    cases["negative"] = ~cases["positive"]
    cases["label"] = cases["positive"].map({True: "pond", False: "hard_negative"})
    return cases[[*_COLUMNS, "geometry"]].reset_index(drop=True)


def write_labels(ledger_path: str | Path, out_path: str | Path, *, overwrite: bool = False) -> gpd.GeoDataFrame:
    """Write :func:`case_labels` as RFC 7946 GeoJSON; returns the labels written."""
    labels = case_labels(ledger_path)
    write_geojson(labels, out_path, overwrite=overwrite)
    return labels
