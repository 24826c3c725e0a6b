"""Make the figures of docs/virtual_fab.md (run from the repository root).

    PYTHONPATH=src python docs/figures/virtual_fab_make.py [--shared ../shared/data/sem_pairs]

Writes docs/figures/virtual_fab_types.png (one row per defect type, plus a normal site) and
docs/figures/virtual_fab_vs_real.png (real SEM inspected/reference pairs beside synthetic pairs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from seminspect.data.imageio import read_image
from seminspect.data.sample import Role, Sample, View
from seminspect.data.synth import DEFECT_TYPES, FabConfig, generate_sample
from seminspect.evaluation.contact_sheet import render_contact_sheet

HERE = Path(__file__).resolve().parent


def types_sheet(out: Path, difficulty: str) -> None:
    config = FabConfig(n_angles=5, n_zooms=2, difficulty=difficulty)
    samples, extra = [], []
    for i, t in enumerate([None, *DEFECT_TYPES]):
        s = generate_sample(config, t, seed=1000 + i, sample_id=f"site {i}")
        keep = [s.view(Role.TARGET, 0), s.view(Role.TARGET, 1), s.view(Role.TARGET, 2), s.view(Role.REFERENCE, 0),
                s.view(Role.ZOOM, 0), s.view(Role.ZOOM, 1)]
        strength = f" s={s.metadata['strength']}" if s.metadata["strength"] else ""
        meta = {**s.metadata, "product": s.metadata["product"] + strength}
        samples.append(Sample(s.sample_id, [v for v in keep if v is not None], s.is_abnormal, s.defect_type,
                              s.depth, meta))
        extra.append([(s.depth, "depth")])
    render_contact_sheet(samples, out, title=f"virtual fab, every defect type ({difficulty}); T0 in-lens, T1/T2 "
                         "side detectors E/S, R0 reference, Z0/Z1 zoom x2/x4, depth (nm)", cell_inches=1.45,
                         extra_columns=extra)


def real_vs_synth(out: Path, shared: Path) -> None:
    samples = []
    for case in ("case1", "case2", "case3"):
        ins = shared / f"{case}_inspected_image.tif"
        ref = shared / f"{case}_reference_image.tif"
        if ins.is_file() and ref.is_file():
            samples.append(Sample(f"real {case}", [View(Role.TARGET, 0, read_image(ins)),
                                                    View(Role.REFERENCE, 0, read_image(ref))],
                                  is_abnormal=case != "case3", defect_type="particle" if case != "case3" else None,
                                  metadata={"product": "real SEM"}))
    config = FabConfig(n_angles=1, n_references=1, difficulty="medium")
    for i, (t, fam) in enumerate([("small_particle", "logic"), ("large_particle", "line_space"), (None, "turns")]):
        s = generate_sample(config.model_copy(update={"pattern_families": [fam]}), t, 2000 + i, f"synth {i + 1}")
        s.metadata["product"] = f"virtual fab {fam}"
        samples.append(s)
    render_contact_sheet(samples, out, title="real SEM pairs (top) vs virtual fab pairs (bottom): T0 = inspected / "
                         "target, R0 = reference", cell_inches=3.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", type=Path, default=Path("../shared/data/sem_pairs"))
    ap.add_argument("--difficulty", default="medium")
    args = ap.parse_args()
    types_sheet(HERE / "virtual_fab_types.png", args.difficulty)
    real_vs_synth(HERE / "virtual_fab_vs_real.png", args.shared)


if __name__ == "__main__":
    main()
