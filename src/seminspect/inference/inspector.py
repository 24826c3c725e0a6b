"""The inspector: a loaded inspection artefact that judges sites and says why.

    insp = Inspector.load("runs/demo/adc")
    result = insp.inspect(samples)           # list of Sample -> Inspection (columnar, one row per site)
    result.frame()                           # pandas DataFrame in the documented schema (docs/predict.md)

Per site, in this order and each once: the reference of every detector index is aligned to its
target (:meth:`PrepareSample.align`); the ADC judges the prepared views (per dihedral op of the
artefact's TTA) on its runtime (:mod:`seminspect.inference.runtime`: the whole model as one ONNX
Runtime graph by default, or torch) and gives p(abnormal), type and tree-level probabilities; the optional
anomaly model scores the same site with the same alignment; the triage policy routes the site (and
the artefact's optional open-set rule sends a site of an unknown type to review) and the route's
reason is spelled out. :meth:`Inspector.prepare_site` (reading-side work, no model) and
:meth:`Inspector.judge` split the same path for ``predict``'s reader threads. Every site is
computed on its own (no batch neighbours), so a site's numbers do not depend on how the input was
chunked: ``evaluate``, ``predict`` and ``predict --ray`` agree to the last bit on the same machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seminspect.data.prepare import Alignment
from seminspect.data.sample import Sample
from seminspect.decision import AUTO_ABNORMAL, AUTO_NORMAL, TriageResult
from seminspect.inference.artefact import LoadedArtefact, load_artefact
from seminspect.inference.guard import CheckedRuntime, checked_runtime
from seminspect.inference.reasons import route_reasons, type_reasons, unknown_types
from seminspect.inference.runtime import make_runtime, site_inputs
from seminspect.utils.progress import track


@dataclass
class PreparedSite:
    """One site made ready for the judges (:meth:`Inspector.prepare_site`): the sample, its
    alignment and the ADC's inputs. Making it touches no model, so it may run in another thread."""

    sample: Sample
    alignment: dict[int, Alignment]
    inputs: tuple[torch.Tensor, ...]


@dataclass
class Inspection:
    """Decisions on ``N`` sites (arrays are aligned with ``sample_ids``).

    ``abnormal (N,)`` p(abnormal); ``types (N, L)`` leaf probabilities; ``levels {level: (N, n)}``;
    ``triage`` routes and type decisions; ``route_reason`` / ``type_reason`` (N,) sentences;
    ``anomaly_scores (N,)`` or None; ``anomaly_maps`` one ``(H, W)`` float32 map per site when asked;
    ``alignments`` one ``{index: Alignment}`` per site.
    """

    sample_ids: list[str]
    abnormal: np.ndarray
    types: np.ndarray
    levels: dict[str, np.ndarray]
    triage: TriageResult
    route_reason: list[str]
    type_reason: list[str]
    alignments: list[dict[int, Alignment]]
    n_views: np.ndarray
    model_version: str
    anomaly_scores: np.ndarray | None = None
    anomaly_maps: list[np.ndarray] | None = None
    taxonomy_paths: list[str] = field(default_factory=list)  # "group/family/type" per leaf index

    def __len__(self) -> int:
        return len(self.sample_ids)

    @property
    def route(self) -> np.ndarray:
        return self.triage.route

    def frame(self, ordinals: Sequence[int] | None = None) -> Any:
        """One row per site in the documented output schema (a pandas DataFrame)."""
        from seminspect.inference.schema import decisions_frame

        return decisions_frame(self, ordinals)


class Inspector:
    """Judge sites with an inspection artefact (see the module docstring)."""

    def __init__(self, artefact: LoadedArtefact, threads: int | None = None, backend: str | None = None,
                 precision: str = "fp32", fp32_check: bool | None = None) -> None:
        self.artefact = artefact
        self.prepare = artefact.prepare
        if threads:
            torch.set_num_threads(threads)
        self.runtime = make_runtime(artefact, backend, precision, threads or torch.get_num_threads())
        size = artefact.image.resize or artefact.image.crop
        if precision != "fp32":
            self.runtime = checked_runtime(artefact, self.runtime, size, fp32_check, threads or torch.get_num_threads())
        if size is not None:
            self.runtime.warm(size, size)  # export / open the graph now: errors before any site is read
        self.anomaly_runtime = None
        if artefact.anomaly is not None and artefact.anomaly_path is not None:
            from seminspect.inference.anomaly_runtime import use_runtime
            from seminspect.models.anomaly.patchcore import PatchCoreModel
            from seminspect.models.anomaly.search import bf16_is_fast

            # PatchCore follows the ADC's backend (STPM, DRAEM and diffusion run in torch); its search runs bf16
            # only when the ADC does.
            patchcore = isinstance(artefact.anomaly.model, PatchCoreModel)
            search = "bf16" if patchcore and self.runtime.precision == "bf16" and bf16_is_fast() else "fp32"
            self.anomaly_runtime = use_runtime(artefact.anomaly, artefact.anomaly_path,
                                               self.runtime.name if patchcore else "torch", search,
                                               threads or torch.get_num_threads())
        tax = artefact.taxonomy
        self.paths = ["/".join(tax.path(leaf)) for leaf in tax.leaves]

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None, with_anomaly: bool = True, backend: str | None = None,
             precision: str = "fp32", fp32_check: bool | None = None) -> Inspector:
        return cls(load_artefact(path, with_anomaly=with_anomaly), threads=threads, backend=backend,
                   precision=precision, fp32_check=fp32_check)

    @property
    def has_anomaly(self) -> bool:
        return self.artefact.anomaly is not None

    def runtime_note(self, threads: str | None = None) -> str:
        """One line: where the judges ran, e.g. ``ADC on onnxruntime (fp32, 2 threads)``."""
        n = torch.get_num_threads()
        note = f"ADC on {self.runtime.name} ({self.runtime.precision}, {threads or f'{n} thread' + 's' * (n > 1)})"
        if isinstance(self.runtime, CheckedRuntime):
            note += f"; {self.runtime.note()}"
        return note if self.anomaly_runtime is None else f"{note}; anomaly model on {self.anomaly_runtime}"

    @property
    def model_version(self) -> str:
        return self.artefact.model_version

    # ----- the judges ------------------------------------------------------------------------
    @property
    def _needs_embedding(self) -> bool:
        return self.artefact.open_set is not None and self.artefact.open_set.score == "mahalanobis"

    def _embedding(self, p: dict[str, Any]) -> np.ndarray:
        if "embedding" not in p:
            from seminspect.inference.runtime import BackendError

            raise BackendError(f"{self.artefact.path}/runtime: the {self.runtime.name} graph predates the site "
                               "embedding its open-set rule needs; delete the folder's .onnx files to re-export "
                               "(and re-run `seminspect optimise` for int8)")
        return np.asarray(p["embedding"], dtype=np.float64)

    def _anomaly(self, sample: Sample, alignment: dict[int, Alignment]) -> tuple[float, np.ndarray]:
        res = self.artefact.anomaly.score([sample], alignments=[alignment], progress=False)
        return float(res.scores[0]), res.maps[0]

    def inspect(self, samples: Sequence[Sample], maps: bool = False, progress: str | None = None) -> Inspection:
        """Judge ``samples`` (labels, if any, are ignored). ``maps``: keep each site's anomaly map.

        ``samples`` may be a ``SampleDataset``: sites are read one at a time. ``progress``: a bar
        with this description.
        """
        if maps and not self.has_anomaly:
            from seminspect.models.artefact import ArtefactError

            raise ArtefactError(f"{self.artefact.path}: anomaly maps asked for, but the artefact has no anomaly model "
                                "(add one with `seminspect join`)")
        sites = (self.prepare_site(s) for s in (track(samples, progress) if progress else samples))
        return self.judge(sites, maps=maps)

    def prepare_site(self, sample: Sample) -> PreparedSite:
        """Align the site's references to its targets and cut the ADC's inputs (no model runs; thread-safe)."""
        a = self.prepare.align(sample)
        return PreparedSite(sample, a, site_inputs(self.artefact, self.prepare.apply(sample, a)))

    def judge(self, sites: Iterable[PreparedSite], maps: bool = False) -> Inspection:
        """Judge prepared sites (:meth:`prepare_site`), each on its own, and route them."""
        art = self.artefact
        ab, ty, align, nviews, ids = [], [], [], [], []
        lv: dict[str, list[np.ndarray]] = {n: [] for n in art.model.level_names}
        an_scores: list[float] = []
        an_maps: list[np.ndarray] = []
        emb: list[np.ndarray] = []
        for site in sites:
            s, a = site.sample, site.alignment
            p = self.runtime.probabilities(*site.inputs)
            ab.append(p["abnormal"])
            ty.append(p["types"])
            if self._needs_embedding:
                emb.append(self._embedding(p))
            for n in lv:
                lv[n].append(p["levels"][n])
            align.append(a)
            nviews.append(len(s.views))
            ids.append(s.sample_id)
            if self.has_anomaly:
                score, amap = self._anomaly(s, a)
                an_scores.append(score)
                if maps:
                    an_maps.append(amap)
        n_types = art.taxonomy.num_leaves
        abnormal = np.concatenate(ab).astype(np.float64) if ab else np.zeros(0)
        types = np.concatenate(ty).astype(np.float64) if ty else np.zeros((0, n_types))
        levels = {n: (np.concatenate(v) if v else np.zeros((0, 0))) for n, v in lv.items()}
        anomaly = np.asarray(an_scores, dtype=np.float64) if self.has_anomaly else None
        triage = self._route(abnormal, types, anomaly)
        route_reason, type_reason = route_reasons(art, triage, anomaly), type_reasons(art, triage)
        if art.open_set is not None and len(abnormal) and art.policy is not None:
            triage, route_reason, type_reason = unknown_types(
                art.open_set, triage, np.concatenate(emb) if self._needs_embedding else types, route_reason,
                type_reason)
        return Inspection(
            sample_ids=ids, abnormal=abnormal, types=types, levels=levels, triage=triage,
            route_reason=route_reason, type_reason=type_reason,
            alignments=align, n_views=np.asarray(nviews, dtype=np.int64), model_version=art.model_version,
            anomaly_scores=anomaly, anomaly_maps=an_maps if maps else None, taxonomy_paths=self.paths)

    def _route(self, abnormal: np.ndarray, types: np.ndarray, anomaly: np.ndarray | None) -> TriageResult:
        pol = self.artefact.policy
        n = len(abnormal)
        if pol is None or n == 0:  # nothing calibrated: every site to review, types as suggestions only
            k = min(3, types.shape[1])
            top = np.argsort(-types, axis=1, kind="stable")[:, :k].astype(np.int64)
            return TriageResult(route=np.full(n, "review", dtype="<U13"), type_decision=np.full(n, -1, np.int64),
                                top_k_types=top, top_k_probs=np.take_along_axis(types, top, 1),
                                abnormal_scores=abnormal)
        return pol.predict(abnormal, type_probs=types if pol.n_types_ else None,
                           anomaly_scores=anomaly if pol.anomaly_threshold is not None else None)

__all__ = ["AUTO_ABNORMAL", "AUTO_NORMAL", "Inspection", "Inspector", "PreparedSite"]
