# ruff: noqa: E501  (report templates are long f-strings)
"""Benchmarks (b) DeepPCB patch pairs and (c) ELPV, plus TTA and backbone options where cheap.

    python -m seminspect import deeppcb ../shared/data/deeppcb /tmp/adc/deeppcb --mode patches --patch-size 96
    python -m seminspect import elpv - /tmp/adc/elpv
    nice -n 10 python benchmarks/adc_real.py deeppcb configs/adc_deeppcb.yaml /tmp/adc/runs/deeppcb
    (ELPV: use benchmarks/adc_elpv.py, which adds fine-tuning, the validation-chosen accuracy threshold and
    the confusion matrix; the ``elpv`` branch here is the older frozen-backbone-only variant.)

Writes benchmarks/results/adc_<name>.md.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from adc_common import HEADER, cached_splits, fit_heads, machine, metrics_of, row  # noqa: E402

from seminspect.training.adc_trainer import features_for, open_dataset  # noqa: E402
from seminspect.training.config import ADCConfig  # noqa: E402
from seminspect.workflow import train_and_evaluate as train  # noqa: E402


def main(name: str, config: str, out: str) -> None:
    import torch

    t_all = time.perf_counter()
    cfg = ADCConfig.from_yaml(config)
    cfg.output = out
    if name == "elpv" and cfg.train.finetune_epochs > 0:  # its validation threshold below uses frozen features
        raise SystemExit(f"{config}: fine-tuned ELPV configs run with benchmarks/adc_elpv.py")
    torch.set_num_threads(cfg.threads or 2)
    res = train(cfg, log=None)
    m = res.metrics["test"]
    S = cached_splits(cfg, Path(cfg.train.cache_dir or Path(out) / "cache"))
    tax, test = S["taxonomy"], S["test"]
    finetuned = cfg.train.finetune_epochs > 0
    frozen_note = "frozen backbone (the plain model's is fine-tuned)" if finetuned else ""
    if finetuned:  # the trained model's rows need test features from its own, fine-tuned backbone
        test = features_for(res.model, open_dataset(cfg.data.path, cfg.data.roles).split(cfg.data.test_split), cfg,
                            cfg.train.tta, None, "encoding test views (fine-tuned backbone)")
    train_s = res.metrics["train_seconds"] + res.metrics.get("finetune_seconds", 0.0)
    lines = [HEADER, row("plain model", m, train_s, "heads, then fine-tuning" if finetuned else "")]
    if name == "deeppcb":
        lines.append(row("same model, template (reference) removed at test", metrics_of(res.model, test.drop_role(1),
                                                                                        tax)))
        mdl, s = fit_heads(cfg, tax, S["train"].drop_role(1), S["val"].drop_role(1))
        lines.append(row("trained and tested without the template", metrics_of(mdl, S["test"].drop_role(1), tax), s,
                         frozen_note))
    if len(test.ops) > 1:
        lines.append(row(f"no TTA (identity view only; plain uses {test.ops})",
                         metrics_of(res.model, test, tax, ops=[0])))
    acc = ""
    if name == "elpv":
        y = test.is_abnormal.numpy()
        from seminspect.training.adc_trainer import predict_features

        p = predict_features(res.model, test, test.ops)["abnormal"]
        val_p = predict_features(res.model, S["val"])["abnormal"]
        vy = S["val"].is_abnormal.numpy()
        # Accuracy threshold chosen on the validation part of train (never on test).
        cands = np.unique(val_p)
        best = max(cands, key=lambda t: ((val_p >= t) == (vy == 1)).mean())
        acc = (f"- accuracy on test at 0.5: {((p >= 0.5) == (y == 1)).mean():.4f}; at the threshold chosen on "
               f"validation ({best:.3f}): {((p >= best) == (y == 1)).mean():.4f} (n = {len(y)}, "
               f"{int((y == 1).sum())} defective)\n")
    total = time.perf_counter() - t_all
    cal = m.get("calibrated", {})
    text = f"""# ADC on {name}

- command: `python benchmarks/adc_real.py {name} {config} {out}` (torch threads: {cfg.threads or 2})
- date: {time.strftime("%Y-%m-%d", time.gmtime())}; machine: {machine()}
- wall time: {total:.0f} s (view encoding {res.metrics['encode_seconds']:.0f} s; head training {res.metrics['train_seconds']:.0f} s; backbone fine-tuning {res.metrics.get('finetune_seconds', 0.0):.0f} s)
- data: {cfg.data.path}; train {res.metrics['train_samples']} (+ {res.metrics['val_samples']} val carved out of train), test {m.get('n')} ({m.get('n_abnormal')} abnormal)
{acc}
| metric | value |
|---|---|
| AUROC | {m.get('auroc', float('nan')):.4f} |
| recall at precision >= 99 % (threshold on test) | {m['recall_at_precision']['recall']:.4f} (95 % CI {m['recall_at_precision']['recall_ci'][0]:.3f}-{m['recall_at_precision']['recall_ci'][1]:.3f}), precision lower bound {m['recall_at_precision']['precision_lower_bound']:.4f} |
| calibrated on calib split | {json.dumps(cal) if cal else 'no calib split'} |
| type macro-F1 / accuracy | {m.get('type_macro_f1', float('nan')):.4f} / {m.get('type_accuracy', float('nan')):.4f} |
| per-type F1 | {json.dumps({k: round(v, 3) for k, v in m.get('type_f1', {}).items()})} |

{chr(10).join(lines)}
"""
    dest = Path(__file__).parent / "results" / f"adc_{name}.md"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
