"""bf16 / int8 with an fp32 check near the policy's thresholds: fp32's routes at most of the cheap arithmetic's speed.

    rt = CheckedRuntime(fast, exact, policy, Margins(abnormal=0.02, types=0.03))
    p = rt.probabilities(*inputs)   # fast's answer, or exact's where fast's might decide otherwise

A route changes only where p(abnormal) crosses one of the policy's thresholds, and a type decision
only where the top type probability crosses its bar or the top two swap. So a site is judged again
in fp32 when moving its low-precision p(abnormal) by ``margins.abnormal``, or its type probabilities
by ``margins.types``, would change what the policy decides. Where the low-precision error stays
below the margins, every route and type decision is fp32's. The margins are twice the largest
difference measured between the two precisions on real sites (`seminspect optimise --precision`,
written beside the graph), so the promise holds as far as those sites stand for the rest.
``checked`` / ``judged`` count the sites judged again and all sites. Reads the artefact's
``runtime/`` folder only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seminspect.inference.artefact import LoadedArtefact
from seminspect.inference.runtime import BackendError, OrtRuntime, existing_graph, graph_path

SAFETY = 2.0  # margins = SAFETY x the largest difference seen on the check sites


@dataclass(frozen=True)
class Margins:
    """How far the low precision may move p(abnormal) and a type probability before fp32 is asked."""

    abnormal: float
    types: float


def check_report_path(artefact: LoadedArtefact, height: int, width: int, precision: str) -> Path:
    """``<artefact>/runtime/adc-<model_version>-<H>x<W>-<precision>.json``: `optimise`'s comparison."""
    return graph_path(artefact, height, width, precision).with_suffix(".json")


def read_margins(artefact: LoadedArtefact, height: int, width: int, precision: str) -> Margins | None:
    """The margins from the comparison `optimise` wrote for ``precision`` (None: never measured)."""
    found = existing_graph(check_report_path(artefact, height, width, precision))
    if found is None:
        return None
    report = json.loads(found.read_text())
    d_ab, d_ty = report.get("max_abs_diff_p_abnormal"), report.get("max_abs_diff_p_type")
    if d_ab is None or d_ty is None:
        return None
    return Margins(abnormal=SAFETY * float(d_ab), types=SAFETY * float(d_ty))


def decide(policy: Any, abnormal: np.ndarray, types: np.ndarray | None) -> Any:
    """The policy's routes and type decisions from the ADC's outputs alone (an anomaly rule, which does not
    depend on the ADC's precision, flags nothing here)."""
    n = len(abnormal)
    flags = None if policy.anomaly_threshold is None else np.full(n, float(policy.anomaly_threshold))
    return policy.predict(abnormal, type_probs=types if policy.n_types_ else None, anomaly_scores=flags)


def near_a_threshold(policy: Any, abnormal: float, types: np.ndarray, margins: Margins) -> bool:
    """Whether moving ``abnormal`` by +-margins.abnormal, or ``types`` by margins.types (the top one up or
    down; or down while a type that could then overtake it goes up), changes the policy's route or
    type decision. Routes and type bars are monotone in these scores, so the ends of each range suffice."""
    s = np.array([abnormal, abnormal - margins.abnormal, abnormal + margins.abnormal]).clip(0.0, 1.0)
    if not policy.n_types_:
        return bool(len(set(decide(policy, s, None).route)) > 1)
    top = int(np.argmax(types))
    raised, lowered = types.copy(), types.copy()
    raised[top] += margins.types
    lowered[top] -= margins.types
    variants = [types, raised, lowered]
    for j in np.flatnonzero(types + 2 * margins.types >= types[top]):
        if j != top:
            swapped = types.copy()
            swapped[top] -= margins.types
            swapped[j] += margins.types
            variants.append(swapped)
    v = np.stack(variants).clip(0.0, 1.0)
    res = decide(policy, np.repeat(s, len(v)), np.tile(v, (3, 1)))
    return bool(len(set(res.route)) > 1 or len(set(res.type_decision.tolist())) > 1)


class CheckedRuntime:
    """A low-precision runtime whose sites near a threshold are judged again by an fp32 one."""

    def __init__(self, fast: Any, exact: Any, policy: Any, margins: Margins) -> None:
        self.fast, self.exact, self.policy, self.margins = fast, exact, policy, margins
        self.name, self.precision = fast.name, fast.precision
        self.checked = self.judged = 0

    def warm(self, height: int, width: int) -> None:
        self.fast.warm(height, width)
        self.exact.warm(height, width)

    def probabilities(self, images: Any, roles: Any, indices: Any, view_mask: Any) -> dict[str, Any]:
        p = self.fast.probabilities(images, roles, indices, view_mask)
        ab, ty = np.asarray(p["abnormal"], np.float64), np.asarray(p["types"], np.float64)
        near = [near_a_threshold(self.policy, float(a), t, self.margins) for a, t in zip(ab, ty, strict=True)]
        self.judged += len(near)
        if any(near):  # a batch is judged again whole (the inspector sends one site at a time)
            self.checked += len(near)
            return self.exact.probabilities(images, roles, indices, view_mask)
        return p

    def note(self) -> str:
        """``fp32 check: 12 of 200 sites near a threshold judged again (margins 0.02 / 0.03)``."""
        return (f"fp32 check: {self.checked} of {self.judged} sites near a threshold judged again "
                f"(margins {self.margins.abnormal:.3g} / {self.margins.types:.3g})")


def checked_runtime(artefact: LoadedArtefact, fast: Any, size: int | None, want: bool | None,
                    threads: int | None) -> Any:
    """``fast`` wrapped in a :class:`CheckedRuntime` (fp32 on ONNX Runtime) where its precision was measured
    against fp32 (`optimise --precision`) and the artefact routes; ``want`` None: wherever it can be,
    False: never, True: refused in one line where it cannot be."""
    if want is False:
        return fast
    margins = None if size is None else read_margins(artefact, size, size, fast.precision)
    if artefact.policy is None or margins is None:
        if want:
            why = ("the artefact has no calibrated policy" if artefact.policy is None else
                   "its views have no fixed size (no crop or resize), so no graph of one size was compared"
                   if size is None else
                   f"{fast.precision} was never compared with fp32 on real sites; run `seminspect optimise "
                   f"{artefact.path} --data DATASET --precision {fast.precision}`")
            raise BackendError(f"{artefact.path}: no fp32 check possible: {why}")
        return fast
    return CheckedRuntime(fast, OrtRuntime(artefact, "fp32", threads), artefact.policy, margins)


__all__ = ["CheckedRuntime", "Margins", "check_report_path", "checked_runtime", "decide", "near_a_threshold",
           "read_margins"]
