"""Importers that convert public real datasets into the seminspect on-disk format.

One module per dataset; each writes a dataset folder (images + ``manifest.csv`` + ``dataset.yaml``)
deterministically, with the manifest written atomically at the end (an interrupted import leaves
no manifest, so it is never mistaken for a complete dataset). ``seminspect import`` calls these.
"""

from seminspect.data.adapters._common import AdapterError, group_split
from seminspect.data.adapters.deeppcb import import_deeppcb
from seminspect.data.adapters.elpv import import_elpv
from seminspect.data.adapters.samsung_depth import import_samsung_depth
from seminspect.data.adapters.sem_pairs import import_sem_pairs

__all__ = ["AdapterError", "group_split", "import_deeppcb", "import_elpv", "import_samsung_depth",
           "import_sem_pairs"]
