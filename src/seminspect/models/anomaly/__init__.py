"""Unsupervised anomaly detection against the reference die: PatchCore, STPM, DRAEM and diffusion.

Pure-PyTorch modules (:mod:`.patchcore`, :mod:`.stpm`, :mod:`.features`) are separate from the
fit/predict/save/load estimator :class:`AnomalyDetector` (:mod:`.detector`).
"""

from seminspect.models.anomaly.config import AnomalyConfig, load_anomaly_config
from seminspect.models.anomaly.detector import AnomalyDetector, AnomalyResult
from seminspect.models.anomaly.diffusion import DiffusionModel
from seminspect.models.anomaly.draem import DRAEMModel
from seminspect.models.anomaly.features import AnomalyConfigError, TinyConvBackbone, build_backbone
from seminspect.models.anomaly.patchcore import PatchCoreModel, greedy_coreset
from seminspect.models.anomaly.stpm import STPMModel
from seminspect.models.anomaly.threshold import fit_normal_threshold
from seminspect.models.anomaly.views import AnomalyWarning

__all__ = [
    "AnomalyConfig", "AnomalyConfigError", "AnomalyDetector", "AnomalyResult", "AnomalyWarning", "DiffusionModel",
    "DRAEMModel",
    "PatchCoreModel", "STPMModel", "TinyConvBackbone", "build_backbone", "fit_normal_threshold", "greedy_coreset",
    "load_anomaly_config",
]
