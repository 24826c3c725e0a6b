"""Inference: an inspection artefact judges new sites. The one path behind evaluate, predict and serve.

A reader's map: ``artefact`` (load and check an artefact folder), ``inspector`` (per-site decisions:
route with its reason, types with tree paths, anomaly score and map, registration), ``reasons``
(the sentences), ``schema`` (the output tables), ``predict`` (the streaming, resumable batch job),
``ray_predict`` (the same job on Ray Data; optional extra). Reads artefacts that training writes;
never imports :mod:`seminspect.training`.
"""

from seminspect.inference.artefact import LoadedArtefact, load_artefact
from seminspect.inference.inspector import Inspection, Inspector

__all__ = ["Inspection", "Inspector", "LoadedArtefact", "load_artefact"]
