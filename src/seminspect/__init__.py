"""seminspect: review of suspected defects in multi-view SEM images of semiconductor wafers.

Stages (one sub-package each): ``data`` (samples, readers, virtual fab, adapters) ->
``models`` (backbones, ADC classifier, anomaly models, depth) -> ``decision`` (thresholds,
triage) -> ``evaluation`` (metrics, displays, reports); ``training`` holds the loops,
``export``/``serve`` the deployment side, ``cli`` a thin typer layer over all of it.
"""

from seminspect.errors import SeminspectError

__version__ = "0.1.0"
__all__ = ["SeminspectError", "__version__"]
