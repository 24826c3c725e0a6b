"""Decisions from scores: thresholds with confidence-bounded error targets, and triage.

A reader's map: ``_bounds`` (exact binomial bounds), ``_base`` (parameters, validation, JSON),
``_thresholds`` (precision / negative-predictive / normal-quantile thresholds), ``_triage``
(auto-abnormal, auto-normal or review; type auto-classified or review with top-k),
``_openset`` (a type that is none of the known ones -> review, reason ``unknown_type``).
Inputs are scores and probabilities, never images.
"""

from seminspect.decision._base import (
    DecisionError,
    DecisionEstimator,
    InsufficientDataError,
    NotFittedError,
    estimator_from_dict,
)
from seminspect.decision._bounds import (
    clopper_pearson_interval,
    clopper_pearson_lower,
    clopper_pearson_upper,
    min_samples_for_zero_errors,
)
from seminspect.decision._openset import UNKNOWN_TYPE, OpenSetTypeRule
from seminspect.decision._thresholds import (
    NegativePredictiveThreshold,
    NormalQuantileThreshold,
    PrecisionThreshold,
)
from seminspect.decision._triage import AUTO_ABNORMAL, AUTO_NORMAL, REVIEW, ROUTES, TriagePolicy, TriageResult

__all__ = [
    "AUTO_ABNORMAL",
    "AUTO_NORMAL",
    "REVIEW",
    "ROUTES",
    "TriagePolicy",
    "TriageResult",
    "UNKNOWN_TYPE",
    "DecisionError",
    "DecisionEstimator",
    "InsufficientDataError",
    "NegativePredictiveThreshold",
    "NormalQuantileThreshold",
    "NotFittedError",
    "OpenSetTypeRule",
    "PrecisionThreshold",
    "clopper_pearson_interval",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "estimator_from_dict",
    "min_samples_for_zero_errors",
]
