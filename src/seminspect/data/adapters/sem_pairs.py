"""The 3 real SEM inspected/reference pairs (``../shared/data/sem_pairs``) into the seminspect format.

Source files: ``caseN_inspected_image.tif`` and ``caseN_reference_image.tif`` (8-bit TIFF; sizes
differ between cases: 480x340, 369x480, 480x480 as (H, W)). Each case is one sample: target view 0
(inspected) + reference view 0, no masks (the source has none).

Labels: the source says case1 and case2 hold a particle defect and case3 is defect-free. The
defect TYPES below were judged by eye by the seminspect data helper (there is no ground-truth
type) and the metadata says so:

* case1: one bright, saturated particle about 12 px across (with a ~20 px halo) sitting on a line
  edge, large relative to the ~10-15 px line width -> ``large_particle``.
* case2: a dark spot about 4-5 px across on a line, plus a faint ~8 px bright blob and a thin
  arc in the open area -> ``small_particle``.
* case3: normal.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from seminspect.data.adapters._common import AdapterError, SkipLog, prepare_output, require
from seminspect.data.imageio import ImageReadError, read_image
from seminspect.data.manifest import DatasetInfo, DatasetWriter
from seminspect.data.sample import Sample, View
from seminspect.utils.progress import track

#: case -> (label, defect type, how the type was decided / what is visible)
CASES = {
    "case1": (True, "large_particle", "judged by eye: bright saturated particle ~12 px (halo ~20 px) on a line edge"),
    "case2": (True, "small_particle", "judged by eye: dark ~4-5 px spot on a line; also a faint ~8 px blob and a "
                                      "thin arc in the open area"),
    "case3": (False, None, "source states defect-free"),
}


def import_sem_pairs(source: str | Path, out: str | Path, overwrite: bool = False, skip_bad: bool = False,
                     log: Callable[[str], None] | None = None) -> Path:
    """Convert the SEM pairs folder into a dataset folder at ``out`` (taxonomy ``sem_default``).

    ``skip_bad``: a case whose images cannot be read (or differ in size, or lack a reference) is
    recorded in ``out/import_skipped.csv`` and passed over; ``log`` receives the one-line summary.
    """
    source = require(Path(source), "SEM pairs folder")
    found = sorted(p.name.removesuffix("_inspected_image.tif") for p in source.glob("*_inspected_image.tif"))
    if not found:
        raise AdapterError(f"{source}: no *_inspected_image.tif files")
    out = prepare_output(out, overwrite)
    info = DatasetInfo(
        taxonomy="sem_default",
        description="3 real SEM inspected/reference pairs (public defect-detection exercise, MIT); "
                    "target = inspected, reference = reference die; no masks. Defect types judged by eye.",
        extra={"source": str(source)},
    )
    skips = SkipLog(out, skip_bad)
    with DatasetWriter(out, info, image_format="tiff") as writer:
        for case in track(found, "importing SEM pairs"):
            tgt_path = source / f"{case}_inspected_image.tif"
            ref_path = source / f"{case}_reference_image.tif"
            try:
                require(ref_path, f"reference image of {case}")
                target, reference = read_image(tgt_path), read_image(ref_path)
                if target.shape != reference.shape:
                    raise AdapterError(f"{ref_path}: size {reference.shape} differs from {tgt_path.name} "
                                       f"{target.shape}")
            except (AdapterError, ImageReadError) as exc:
                skips.skip(case, exc, tgt_path)
                continue
            abnormal, dtype, note = CASES.get(case, (None, None, "not described by the source: unlabelled"))
            writer.add(Sample(
                sample_id=case,
                views=[View("target", 0, target, source=str(tgt_path)), View("reference", 0, reference)],
                is_abnormal=abnormal,
                defect_type=dtype,
                metadata={"source": tgt_path.name, "reference_source": ref_path.name, "label_note": note,
                          "type_source": "by eye" if dtype else ""},
            ))
        summary = skips.finish(len(found), "cases")
        if summary is not None:
            writer.info.extra["skipped"] = f"{len(skips.rows)} unreadable case(s), listed in {skips.path.name}"
            if log is not None:
                log(summary)
    return out
