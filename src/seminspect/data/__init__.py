"""Samples, the on-disk format, taxonomies, validation, augmentation, virtual fab and adapters."""

from seminspect.data.batch import Batch, collate
from seminspect.data.dataset import SampleDataset
from seminspect.data.imageio import ImageReadError, read_image, to_float, write_image
from seminspect.data.manifest import DatasetInfo, DatasetWriter, ManifestError, read_manifest
from seminspect.data.sample import Role, Sample, View
from seminspect.data.taxonomy import Taxonomy, TaxonomyError

__all__ = [
    "Batch", "DatasetInfo", "DatasetWriter", "ImageReadError", "ManifestError", "Role", "Sample",
    "SampleDataset", "Taxonomy", "TaxonomyError", "View", "collate", "read_image", "read_manifest",
    "to_float", "write_image",
]
