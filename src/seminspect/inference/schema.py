"""The output tables of ``seminspect predict``: one row per judged site, one row per site that failed.

``DECISION_COLUMNS`` lists every decision column with its Arrow type and meaning; docs/predict.md
shows the same table with an example. Both Parquet and CSV carry exactly these columns, in this
order, whatever the artefact (columns that do not apply are null).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from seminspect.data.sample import MAX_VIEWS_PER_ROLE

if TYPE_CHECKING:
    from seminspect.inference.inspector import Inspection

TOP_K = 3

DECISION_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("site", pa.int64(), "position of the site in the input (0-based, manifest order)"),
    ("sample_id", pa.string(), "the site's id"),
    ("abnormal_prob", pa.float64(), "p(abnormal) from the ADC (mean over the artefact's TTA ops)"),
    ("route", pa.string(), "auto_abnormal | auto_normal | review"),
    ("route_reason", pa.string(), "why: the bound that allowed the automatic call, or what sent it to review"),
    ("type", pa.string(), "auto-classified defect type (leaf), null when the type goes to review or does not apply"),
    ("type_path", pa.string(), "tree path of `type`, e.g. pattern/connectivity/bridge"),
    ("type_reason", pa.string(), "why the type of an auto-abnormal site goes to review (else null)"),
    *[c for k in range(1, TOP_K + 1) for c in (
        (f"top{k}_type", pa.string(), f"{k}. most probable type"),
        (f"top{k}_prob", pa.float64(), "its probability"),
        (f"top{k}_path", pa.string(), "its tree path"))],
    ("anomaly_score", pa.float64(), "anomaly model's image score (null without an anomaly model)"),
    ("anomaly_flag", pa.bool_(), "anomaly score above the triage rule (never auto-normal); null without a model"),
    ("n_views", pa.int64(), "views read for the site"),
    ("reg_shift_max_px", pa.float64(), "largest shift (px, either axis) applied to a reference; null without one"),
    ("reg_residual_max", pa.float64(), "largest normalised residual after alignment (0 same, ~0.7 unrelated)"),
    *[c for i in range(MAX_VIEWS_PER_ROLE) for c in (
        (f"reg_dy_{i}", pa.float64(), f"shift (rows, px) of reference {i} onto target {i}"),
        (f"reg_dx_{i}", pa.float64(), f"shift (columns, px) of reference {i} onto target {i}"),
        (f"reg_residual_{i}", pa.float64(), f"residual of pair {i} after alignment"))],
    ("model_version", pa.string(), "content id of the artefact's weights, thresholds and anomaly model"),
]
DECISION_SCHEMA = pa.schema([pa.field(n, t) for n, t, _ in DECISION_COLUMNS])

ERROR_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("site", pa.int64(), "position of the site in the input"),
    ("sample_id", pa.string(), "the site's id"),
    ("file", pa.string(), "the file (and manifest row) at fault"),
    ("error", pa.string(), "what is wrong, in one line"),
]
ERROR_SCHEMA = pa.schema([pa.field(n, t) for n, t, _ in ERROR_COLUMNS])


def _none_if_empty(values: Sequence[str]) -> list[str | None]:
    return [v if v else None for v in values]


def decisions_frame(insp: Inspection, ordinals: Sequence[int] | None = None) -> pd.DataFrame:
    """The decision table of an :class:`~seminspect.inference.inspector.Inspection`."""
    n = len(insp)
    tri = insp.triage
    names = np.array([p.rsplit("/", 1)[-1] for p in insp.taxonomy_paths] + [None], dtype=object)
    paths = np.array([*insp.taxonomy_paths, None], dtype=object)
    td = tri.type_decision
    cols: dict[str, Any] = {
        "site": np.arange(n, dtype=np.int64) if ordinals is None else np.asarray(ordinals, dtype=np.int64),
        "sample_id": list(insp.sample_ids),
        "abnormal_prob": insp.abnormal.astype(np.float64),
        "route": tri.route.astype(object),
        "route_reason": list(insp.route_reason),
        "type": names[td], "type_path": paths[td],
        "type_reason": _none_if_empty(insp.type_reason),
    }
    for k in range(TOP_K):
        has = tri.top_k_types.shape[1] > k
        idx = tri.top_k_types[:, k] if has else np.full(n, -1)
        cols[f"top{k + 1}_type"] = names[idx]
        cols[f"top{k + 1}_prob"] = tri.top_k_probs[:, k] if has else np.full(n, np.nan)
        cols[f"top{k + 1}_path"] = paths[idx]
    if insp.anomaly_scores is not None:
        cols["anomaly_score"] = insp.anomaly_scores
        cols["anomaly_flag"] = (tri.anomaly_flag if tri.anomaly_flag is not None
                                else np.zeros(n, dtype=bool)).astype(object)
    else:
        cols["anomaly_score"] = np.full(n, np.nan)
        cols["anomaly_flag"] = [None] * n
    cols["n_views"] = insp.n_views
    per = {f"reg_{what}_{i}": np.full(n, np.nan) for i in range(MAX_VIEWS_PER_ROLE)
           for what in ("dy", "dx", "residual")}
    shift_max, resid_max = np.full(n, np.nan), np.full(n, np.nan)
    for j, al in enumerate(insp.alignments):
        for idx, a in al.items():
            per[f"reg_dy_{idx}"][j], per[f"reg_dx_{idx}"][j] = a.shift
            per[f"reg_residual_{idx}"][j] = a.residual
        if al:
            shift_max[j] = max(max(abs(a.shift[0]), abs(a.shift[1])) for a in al.values())
            resid_max[j] = max(a.residual for a in al.values())
    cols["reg_shift_max_px"], cols["reg_residual_max"] = shift_max, resid_max
    cols.update(per)
    cols["model_version"] = [insp.model_version] * n
    df = pd.DataFrame(cols)
    return df[[c for c, _, _ in DECISION_COLUMNS]]


def to_table(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """``df`` as an Arrow table of exactly ``schema`` (NaN in float columns stays NaN; None is null)."""
    return pa.Table.from_pandas(df, schema=schema, preserve_index=False)


def errors_frame(rows: Sequence[tuple[int, str, str | None, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=[c for c, _, _ in ERROR_COLUMNS]).astype(
        {"site": np.int64}) if rows else pd.DataFrame({c: pd.Series(dtype=object if c != "site" else np.int64)
                                                        for c, _, _ in ERROR_COLUMNS})
