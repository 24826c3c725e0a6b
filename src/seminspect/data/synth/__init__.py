"""The virtual fab: synthetic multi-view SEM review sites with known defects, masks and depth.

Pipeline: layout (:mod:`.layout`) -> die state and height map (:mod:`.die`) -> defect
injection (:mod:`.defects`) -> SEM image model (:mod:`.sem_model`) -> samples (:mod:`.generator`)
-> datasets (:mod:`.dataset`). Settings live in :class:`FabConfig` (:mod:`.config`).
"""

from seminspect.data.synth.config import FabConfig, FabConfigError
from seminspect.data.synth.dataset import GenerationError, generate_dataset
from seminspect.data.synth.defects import INJECTORS
from seminspect.data.synth.generator import DEFECT_TYPES, generate_sample

__all__ = ["DEFECT_TYPES", "INJECTORS", "FabConfig", "FabConfigError", "GenerationError", "generate_dataset",
           "generate_sample"]
