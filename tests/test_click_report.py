"""The dev click report (``training/evaluate_clicks.py``): per-object rows weigh every object alike, so a case
with many objects counts for more than in the per-case rows (issue #19 states its goal over objects)."""

from __future__ import annotations

import pytest

from medsam_desktop.core.evaluation.click_protocol import ClickCurve

evaluate_clicks = pytest.importorskip("training.evaluate_clicks")


def _curve(objects: list[list[float]]) -> ClickCurve:
    """A curve of 1 click from per-object DSCs [box, click 1] (NSD = DSC / 2)."""
    per_click = list(zip(*objects))
    return ClickCurve(
        dsc=[sum(v) / len(v) for v in per_click], nsd=[sum(v) / len(v) / 2 for v in per_click],
        objects=tuple(range(1, len(objects) + 1)), object_dsc=[tuple(v) for v in per_click],
        object_nsd=[tuple(x / 2 for x in v) for v in per_click],
    )  # fmt: skip


def _row(table: str, name: str) -> list[str]:
    line = next(x for x in table.splitlines() if x.startswith(f"| {name} ") or x.startswith(f"| **{name}**"))
    return [c.strip().strip("*") for c in line.strip("|").split("|")]


def test_object_rows_pool_objects_and_modalities_average_them() -> None:
    curves = {
        "CT": [_curve([[0.5, 0.7]])],  # one object
        "Microscopy": [_curve([[0.2, 0.4], [0.4, 0.6], [0.6, 0.8]])],  # three objects in one case
    }
    table = evaluate_clicks.object_table(curves, clicks=1)
    ct, micro = _row(table, "CT"), _row(table, "Microscopy")
    assert ct[1:4] == ["1", "0.5000", "0.7000"] and micro[1:4] == ["3", "0.4000", "0.6000"]
    pooled = _row(table, "all objects")
    assert pooled[1:4] == ["4", "0.4250", "0.6250"]  # (0.5 + 0.2 + 0.4 + 0.6) / 4 after the box
    assert _row(table, "mean over modalities")[2:4] == ["0.4500", "0.6500"]
    # NSD after the box and after the last click
    assert pooled[-2:] == ["0.2125", "0.3125"]
    per_case = evaluate_clicks.table(curves, clicks=1)
    assert _row(per_case, "Microscopy")[1:3] == ["1", "0.4000"]
