"""The worst errors of both kinds, each site shown whole: every view, mask, difference, model attention.

    add_error_gallery(report, result, inspector, k=6)   # result: EvaluationResult

Missed defects are the ``k`` labelled defects with the lowest p(abnormal); false alarms the ``k``
normal sites with the highest. Each site gets a card: every view at thumbnail size (targets with
the defect mask outlined in green and the classifier's window in yellow, references with their
aligned window, zooms), then per detector index, inside the classifier's window, the target minus
the aligned reference (the inspector's own alignment) and the target tinted where the gradient of
p(abnormal) is largest (:func:`seminspect.evaluation.saliency.target_saliency`).

Thumbnails are indexed PNGs (:mod:`seminspect.evaluation.thumbnails`); when a gallery would exceed
``budget_bytes`` it is drawn again at a smaller size, so the report's size stays bounded whatever
the number of views.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import numpy as np

from seminspect.data.imageio import to_float
from seminspect.data.sample import Role, Sample, View
from seminspect.evaluation.humanize import count, pct, prob
from seminspect.evaluation.saliency import target_saliency
from seminspect.evaluation.thumbnails import MASK, WINDOW, Thumb

LEGEND = ("Green outline: the defect mask from the manifest. Yellow box: the window the classifier sees (on a "
          "reference, moved by the alignment the inspector found). Difference: target minus aligned reference "
          "inside that window (red brighter, blue darker than the reference; one scale per site). Where the model "
          "looked: the target tinted orange on the 10 %, 3 % and 0.5 % of the site's target pixels that p(abnormal) "
          "is most sensitive to (gradient saliency; the darker the tint, the more sensitive).")
MISSED, ALARM = "missed", "alarm"
MIN_PX = 64  # thumbnails are never drawn smaller (a report may then exceed its budget)


@dataclass
class _Site:
    kind: str
    rank: int
    i: int
    sample: Sample
    prepared: Sample
    saliency: dict[int, np.ndarray]


def _img(thumb: Thumb, alt: str, display: int) -> tuple[str, int]:
    """An ``<img>`` of ``thumb`` shown ``display`` px on its longest side; returns (tag, base64 length)."""
    data = thumb.png_base64()
    h, w = thumb.shape
    scale = display / max(h, w)
    tag = (f'<img alt="{html.escape(alt)}" width="{round(w * scale)}" height="{round(h * scale)}" '
           f'src="data:image/png;base64,{data}">')
    return tag, len(data)


def _window(shape: tuple[int, int], crop: int | None, dy: int = 0, dx: int = 0) -> tuple[int, int, int, int] | None:
    """``(top, left, h, w)`` of the classifier's window (as ``PrepareSample``'s crop_at), None = whole image."""
    h, w = shape
    if crop is None or (h <= crop and w <= crop):
        return None
    top = min(max(0, (h - crop) // 2 - dy), max(0, h - crop))
    left = min(max(0, (w - crop) // 2 - dx), max(0, w - crop))
    return top, left, min(crop, h), min(crop, w)


def _full_view(v: View, crop: int | None, shift: tuple[int, int], px: int) -> Thumb:
    t = Thumb.grey(to_float(v.image), px)
    win = _window(v.image.shape, crop, *shift) if v.role != Role.ZOOM else None
    if win is not None:
        t.box(*win, v.image.shape, WINDOW)
    if v.mask is not None and v.mask.any():
        t.draw(t.fit_mask(v.mask), MASK)
    return t


def _grid(site: _Site, insp: Any, preparer: Any, px: int) -> tuple[str, int]:
    """Columns: detector indices, then zooms; rows: target, reference, difference, attention."""
    align = insp.alignments[site.i]
    s, prep = site.sample, site.prepared
    crop = preparer.crop
    oy, ox = preparer.crop_offset(s, align)  # the window follows the die difference with crop_centre: difference
    indices = sorted({v.index for v in s.views if v.role in (Role.TARGET, Role.REFERENCE)})
    zooms = s.zooms
    diffs: dict[int, np.ndarray] = {}
    for t in prep.targets:
        r = prep.view(Role.REFERENCE, t.index)
        if r is not None and r.image.shape == t.image.shape:
            diffs[t.index] = to_float(t.image) - to_float(r.image)
    scale = max([float(np.percentile(np.abs(d), 99.5)) for d in diffs.values()] + [0.02])
    win_px = min(max(48, round(px * 0.8)), max(max(v.image.shape) for v in prep.views))
    display = max(px, 112)
    size = 0

    def cell(thumb: Thumb | None, alt: str, note: str = "") -> str:
        nonlocal size
        if thumb is None:
            return "<td></td>"
        tag, n = _img(thumb, alt, display)
        size += n
        return f"<td>{tag}" + (f"<br><small>{html.escape(note)}</small>" if note else "") + "</td>"

    head = "".join(f"<th>detector {i}</th>" for i in indices) + "".join(f"<th>zoom {z.index}</th>" for z in zooms)
    rows = [f"<tr><th></th>{head}</tr>"]
    cells = []
    for i in indices:
        v = s.view(Role.TARGET, i)
        cells.append(cell(_full_view(v, crop, (-oy, -ox), px) if v is not None else None, f"target {i}"))
    cells += [cell(_full_view(z, crop, (0, 0), px), f"zoom {z.index}") for z in zooms]
    rows.append(f'<tr><th class="l">target</th>{"".join(cells)}</tr>')
    cells = []
    for i in indices:
        v, a = s.view(Role.REFERENCE, i), align.get(i)
        shift = (int(a.shift[0]), int(a.shift[1])) if a is not None and a.method == "integer" else (0, 0)
        shift = (shift[0] - oy, shift[1] - ox)
        note = f"moved {a.shift[0]:+.0f}, {a.shift[1]:+.0f} px" if a is not None else ""
        cells.append(cell(_full_view(v, crop, shift, px) if v is not None else None, f"reference {i}", note))
    rows.append(f'<tr><th class="l">reference</th>{"".join(cells)}</tr>')
    where = f"{crop} px window" if crop else "whole image"
    d_cells, a_cells = [], []
    for i in indices:
        t = prep.view(Role.TARGET, i)
        mask = t.mask if t is not None and t.mask is not None and t.mask.any() else None
        th = Thumb.signed(diffs[i], win_px, scale) if i in diffs else None
        if th is not None and mask is not None:
            th.draw(th.fit_mask(mask), MASK)
        d_cells.append(cell(th, f"difference {i}"))
        sal = site.saliency.get(i)
        th = Thumb.tinted(to_float(t.image), sal, win_px) if t is not None and sal is not None \
            and sal.shape == t.image.shape else None
        if th is not None and mask is not None:
            th.draw(th.fit_mask(mask), MASK)
        a_cells.append(cell(th, f"attention {i}"))
    if diffs:
        rows.append(f'<tr><th class="l">target minus reference<br><small>{where}, '
                    f'±{pct(scale, 0)} of full scale</small></th>{"".join(d_cells)}</tr>')
    if site.saliency:
        rows.append(f'<tr><th class="l">where the model looked<br><small>{where}</small></th>'
                    f'{"".join(a_cells)}</tr>')
    return f'<div class="row"><table class="views">{"".join(rows)}</table></div>', size


def _card(site: _Site, result: Any, inspector: Any, px: int) -> tuple[str, int]:
    insp, i = result.inspection, site.i
    art = inspector.artefact
    names = list(art.taxonomy.leaves)
    s = site.sample
    truth = f"defect, type {s.defect_type}" if s.is_abnormal and s.defect_type else (
        "defect" if s.is_abnormal else "normal")
    top = int(np.argmax(insp.types[i])) if insp.types.shape[1] else -1
    guess = f"; the model's type guess: {names[top]} ({pct(insp.types[i, top])})" if top >= 0 else ""
    route = str(insp.route[i]).replace("_", "-")
    reason = insp.route_reason[i] if i < len(insp.route_reason) else ""
    if reason.startswith("neither route") or reason.startswith("review:"):
        reason = "no route is certified, see Triage"  # the same sentence for every site: said once above
    p = float(insp.abnormal[i])
    if site.kind == MISSED:
        verdict = "missed at the 0.5 cut" if p < 0.5 else "caught at the 0.5 cut"
    else:
        verdict = "false alarm at the 0.5 cut" if p >= 0.5 else "not flagged at the 0.5 cut"
    head = f"{site.rank}. {s.sample_id}: {verdict}"
    meta = (f"Truth: {truth}. p(abnormal) = {prob(p)}{guess}. Route: {route}"
            + (f" ({reason})." if reason else "."))
    grid, n = _grid(site, insp, art.prepare, px)
    return f'<div class="card"><h3>{html.escape(head)}</h3><p>{html.escape(meta)}</p>{grid}</div>', n


def worst_errors(y: np.ndarray, p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the ``k`` defects with the lowest p and the ``k`` normal sites with the highest p."""
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    ab, no = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    missed = ab[np.argsort(p[ab], kind="stable")[:k]]
    alarms = no[np.argsort(-p[no], kind="stable")[:k]]
    return missed, alarms


def add_error_gallery(rep: Any, result: Any, inspector: Any, k: int = 6, max_px: int = 160,
                      budget_bytes: int = 2_000_000) -> dict[str, Any]:
    """Append the two galleries to ``rep``; returns ``{"missed": n, "false_alarms": n, "px": size, "bytes": n}``."""
    y, p = np.asarray(result.is_abnormal), np.asarray(result.inspection.abnormal)
    missed, alarms = worst_errors(y, p, k)
    art = inspector.artefact
    sites: list[_Site] = []
    for kind, idx in ((MISSED, missed), (ALARM, alarms)):
        for rank, i in enumerate(idx, 1):
            s = result.dataset[int(i)]
            a = result.inspection.alignments[int(i)]
            sites.append(_Site(kind, rank, int(i), s, art.prepare.apply(s, a), target_saliency(art, s, a)))
    px = max_px
    for _ in range(5):  # bytes grow with the pixel count: shrink by the square root of the excess
        cards = [_card(site, result, inspector, px) for site in sites]
        total = sum(n for _, n in cards)
        if total <= budget_bytes or px <= MIN_PX:
            break
        px = max(MIN_PX, min(px - 4, int(px * (budget_bytes / total) ** 0.5 * 0.97)))
    n_ab, n_no = int((y == 1).sum()), int((y == 0).sum())
    below, above = int(((y == 1) & (p < 0.5)).sum()), int(((y == 0) & (p >= 0.5)).sum())
    rep.add_heading("Worst errors")
    rep.add_html(f'<p class="legend">{html.escape(LEGEND)}</p>')
    by_kind = {kind: [c for s, c in zip(sites, cards, strict=True) if s.kind == kind] for kind in (MISSED, ALARM)}
    sections = (
        (MISSED, "Missed defects: the defects with the lowest p(abnormal)", n_ab,
         f"{count(below)} of {count(n_ab)} labelled defects scored below 0.5 (the model's own cut); "
         f"the {count(len(missed))} lowest-scored are shown.",
         "No labelled defects on this split: no missed defects to show."),
        (ALARM, "False alarms: the normal sites with the highest p(abnormal)", n_no,
         f"{count(above)} of {count(n_no)} labelled normal sites scored 0.5 or more; "
         f"the {count(len(alarms))} highest-scored are shown.",
         "No labelled normal sites on this split: no false alarms to show."),
    )
    for kind, heading, n_labelled, shown, none in sections:
        rep.add_heading(heading, 3)
        rep.add_text(shown if n_labelled else none)
        for body, _ in by_kind[kind]:
            rep.add_html(body)
    return {"missed": len(missed), "false_alarms": len(alarms), "px": px, "bytes": sum(n for _, n in cards)}
