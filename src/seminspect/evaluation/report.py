"""A self-contained HTML report: headings, text, metric tables, figures and image strips.

One file, no external assets (figures and images are embedded as base64 PNG), simple CSS,
written atomically. Build it in order, then ``save``::

    rep = HtmlReport("ADC on the virtual fab")
    rep.add_metrics({"recall at 99 % precision": 0.93}); rep.add_figure(fig)
    rep.add_image_strip([target, reference, zoom], ["target", "reference", "zoom"], title="worst errors")
    rep.save("runs/x/report.html")
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from seminspect.errors import SeminspectError
from seminspect.utils.io import atomic_write_text

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.25em .6em;
text-align:right}th{background:#f0f0f0}td.l,th.l{text-align:left}
figure{display:inline-block;margin:.4em .6em .4em 0;vertical-align:top;text-align:center}
figcaption{font-size:.8em;color:#555;max-width:260px;word-wrap:break-word}
img{image-rendering:pixelated}.strip{border:1px solid #ddd;padding:.4em;margin:.6em 0;overflow-x:auto;
white-space:nowrap}.strip h3{margin:.1em 0 .3em 0;font-size:1em}.meta{color:#777;font-size:.85em}
.card{border:1px solid #ccc;border-radius:4px;padding:.5em .8em;margin:.8em 0;background:#fafafa}
.card h3{margin:.2em 0}.card p{margin:.2em 0;font-size:.9em}.row{overflow-x:auto;white-space:nowrap;margin:.3em 0}
td.n{white-space:nowrap}table.views{margin:.2em 0}table.views td,table.views th{border:none;padding:2px 3px;
text-align:center;vertical-align:top;background:none;font-weight:normal;font-size:.8em;color:#444}
table.views th.l{text-align:left;max-width:9em;white-space:normal}
.why{background:#f4f8ff;border-left:4px solid #4a78c2;padding:.4em .8em;margin:.6em 0}
.legend{font-size:.85em;color:#444}details pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.85em}
"""


class ReportError(SeminspectError, ValueError):
    """Content the report cannot embed (wrong image shape, an empty strip)."""


def _fmt(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v) or math.isinf(v):
            return "n/a"
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    if isinstance(value, (list, tuple)) and all(isinstance(x, (int, float, np.number)) for x in value):
        return "[" + ", ".join(_fmt(x) for x in value) + "]"
    return str(value)


def _png_base64_from_array(image: np.ndarray, vmin: float | None, vmax: float | None, cmap: str | None) -> str:
    """(H, W) grey (any dtype; scaled to [vmin, vmax], default the image's own range or the
    dtype's full range for integers) or (H, W, 3|4) uint8 colour -> base64 PNG."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (3, 4) and arr.dtype == np.uint8:
        pil = Image.fromarray(arr)
    elif arr.ndim == 2:
        if vmin is None or vmax is None:
            if np.issubdtype(arr.dtype, np.integer):
                info = np.iinfo(arr.dtype)
                lo, hi = float(info.min), float(info.max)
            elif arr.dtype == bool:
                lo, hi = 0.0, 1.0
            else:
                finite = arr[np.isfinite(arr)]
                lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
                if 0.0 <= lo and hi <= 1.0:  # float images in [0, 1] keep their absolute scale
                    lo, hi = 0.0, 1.0
            vmin = lo if vmin is None else vmin
            vmax = hi if vmax is None else vmax
        scaled = (np.nan_to_num(arr.astype(np.float64)) - vmin) / max(vmax - vmin, 1e-12)
        scaled = np.clip(scaled, 0.0, 1.0)
        if cmap:
            import matplotlib

            rgba = matplotlib.colormaps[cmap](scaled)
            pil = Image.fromarray((rgba[..., :3] * 255).round().astype(np.uint8))
        else:
            pil = Image.fromarray((scaled * 255).round().astype(np.uint8))
    else:
        raise ReportError(f"image strip: expected (H, W) or (H, W, 3|4) uint8 images, got {arr.shape} {arr.dtype}")
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


class HtmlReport:
    """Collects sections in order; :meth:`save` writes one self-contained HTML file."""

    def __init__(self, title: str) -> None:
        self.title = str(title)
        self._parts: list[str] = []
        self._figures = 0
        self._images = 0

    # -- content -------------------------------------------------------------------------------
    def add_heading(self, text: str, level: int = 2) -> HtmlReport:
        level = min(max(int(level), 1), 6)
        self._parts.append(f"<h{level}>{html.escape(str(text))}</h{level}>")
        return self

    def add_text(self, text: str) -> HtmlReport:
        """A paragraph per blank-line-separated block; plain text (escaped), single newlines kept."""
        for block in str(text).strip().split("\n\n"):
            if block.strip():
                self._parts.append("<p>" + html.escape(block.strip()).replace("\n", "<br>") + "</p>")
        return self

    def add_html(self, fragment: str) -> HtmlReport:
        """A trusted HTML fragment as it is (the caller escapes any text in it)."""
        self._parts.append(str(fragment))
        return self

    def add_details(self, summary: str, text: str) -> HtmlReport:
        """A collapsed block (``<details>``) holding preformatted text, e.g. a YAML config."""
        self._parts.append(f"<details><summary>{html.escape(str(summary))}</summary>"
                           f"<pre>{html.escape(str(text))}</pre></details>")
        return self

    def add_table(self, table: Any, title: str | None = None, index: bool = False,
                  right: Sequence[str] = ()) -> HtmlReport:
        """A pandas DataFrame, a list of dicts (rows), or a dict of columns.

        Numeric columns are right-aligned, and so are the columns named in ``right`` (numbers
        already written as text, e.g. ``"85.5 %"``)."""
        import pandas as pd

        if isinstance(table, pd.DataFrame):
            df = table if not index else table.reset_index()
        elif isinstance(table, Mapping):
            df = pd.DataFrame(dict(table))
        elif isinstance(table, Sequence) and all(isinstance(r, Mapping) for r in table):
            df = pd.DataFrame(list(table))
        else:
            kind = type(table).__name__
            raise ReportError(f"add_table: expected a DataFrame, a list of dicts or a dict of columns, got {kind}")
        if title:
            self._parts.append(f"<h3>{html.escape(str(title))}</h3>")
        cols = [str(c) for c in df.columns]
        numeric = [pd.api.types.is_numeric_dtype(df[c]) or str(c) in right for c in df.columns]
        head = "".join(
            f'<th class="{"" if n else "l"}">{html.escape(c)}</th>' for c, n in zip(cols, numeric, strict=True)
        )
        rows = []
        for rec in df.itertuples(index=False):
            cells = "".join(
                f'<td class="{"n" if n else "l"}">{html.escape(_fmt(v))}</td>'
                for v, n in zip(rec, numeric, strict=True)
            )
            rows.append(f"<tr>{cells}</tr>")
        self._parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        return self

    def add_metrics(self, metrics: Mapping[str, Any], title: str | None = None) -> HtmlReport:
        """A two-column table of named values; nested dicts are flattened as ``outer / inner``."""
        flat: list[dict[str, str]] = []

        def walk(prefix: str, obj: Any) -> None:
            if isinstance(obj, Mapping):
                for k, v in obj.items():
                    walk(f"{prefix} / {k}" if prefix else str(k), v)
            else:
                flat.append({"metric": prefix, "value": _fmt(obj)})

        walk("", metrics)
        return self.add_table(flat, title=title)

    def add_figure(self, figure: Any, caption: str | None = None, close: bool = True, dpi: int = 110) -> HtmlReport:
        """A matplotlib figure (or a display object with ``figure_``), embedded as PNG."""
        fig = getattr(figure, "figure_", figure)
        if not hasattr(fig, "savefig"):
            raise ReportError(f"add_figure: expected a matplotlib figure, got {type(figure).__name__}")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        if close:
            import matplotlib.pyplot as plt

            plt.close(fig)
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        self._figures += 1
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        img = f'<img alt="figure {self._figures}" src="data:image/png;base64,{data}">'
        self._parts.append(f"<figure>{img}{cap}</figure>")
        return self

    def add_image_strip(
        self,
        images: Sequence[np.ndarray],
        captions: Sequence[str] | None = None,
        title: str | None = None,
        height: int = 160,
        vmin: float | None = None,
        vmax: float | None = None,
        cmap: str | None = None,
    ) -> HtmlReport:
        """One row of images side by side (e.g. every view of one sample), each with a caption.

        ``images``: (H, W) arrays of any dtype (integers on their dtype's full range, floats in
        [0, 1] as they are, other floats min-max scaled unless ``vmin``/``vmax`` fix one scale,
        which anomaly maps need) or (H, W, 3|4) uint8 colour. Shown ``height`` pixels tall.
        """
        if len(images) == 0:
            raise ReportError("add_image_strip: no images")
        if captions is not None and len(captions) != len(images):
            raise ReportError(f"add_image_strip: {len(captions)} captions for {len(images)} images")
        cells = []
        for i, img in enumerate(images):
            data = _png_base64_from_array(np.asarray(img), vmin, vmax, cmap)
            self._images += 1
            cap = html.escape(str(captions[i])) if captions is not None else ""
            cells.append(
                f'<figure><img alt="{cap or "image"}" height="{int(height)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{cap}</figcaption></figure>"
            )
        head = f"<h3>{html.escape(str(title))}</h3>" if title else ""
        self._parts.append(f'<div class="strip">{head}{"".join(cells)}</div>')
        return self

    # -- output --------------------------------------------------------------------------------
    def to_html(self) -> str:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # noqa: UP017 (clarity)
        title = html.escape(self.title)
        body = "\n".join(self._parts)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n"
            f"<style>{_CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
            f"<p class=\"meta\">seminspect report, generated {stamp}</p>\n{body}\n</body>\n</html>\n"
        )

    def save(self, path: str | Path) -> Path:
        """Write the report atomically; returns the path."""
        path = Path(path)
        atomic_write_text(path, self.to_html())
        return path
