"""The one on-disk format of every dataset: the MTAN pre-processed layout (decision D1).

``root/{train,val}/{image,<label>,depth,normal}/<i>.npy`` with ``i = 0..N-1`` contiguous.

- image:  H x W x 3 float32 RGB in [0, 1]
- label:  H x W float, classes ``0..C-1``, ``-1`` = ignore (folder ``label`` for NYUv2 and the synthetic
  rooms, ``label_7`` / ``label_19`` for Cityscapes)
- depth:  H x W x 1 float32, metres (NYUv2, synthetic) or inverse depth (Cityscapes), ``0`` = invalid
- normal: H x W x 3 float32 unit vectors, all-zero = invalid (NYUv2 and synthetic only)
"""

from __future__ import annotations

from dataclasses import dataclass

SPLITS: tuple[str, ...] = ("train", "val")

NYUV2_CLASSES: tuple[str, ...] = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
    "picture", "sofa", "table", "tv", "wall", "window",
)
CITYSCAPES7_CLASSES: tuple[str, ...] = (
    "flat", "construction", "object", "nature", "sky", "human", "vehicle",
)
CITYSCAPES19_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
SYNTH_CLASSES: tuple[str, ...] = (
    "floor", "wall", "ceiling", "box", "sphere", "cylinder", "table",
)


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset kind stores: folder names, classes, native size and depth meaning."""

    name: str
    label_dir: str
    classes: tuple[str, ...]
    tasks: tuple[str, ...]
    height: int
    width: int
    depth_kind: str  # "metric" (metres) or "inverse" (inverse depth / disparity-like)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def folder(self, task: str) -> str:
        """Folder that holds the ground truth of ``task``."""
        return {"segmentation": self.label_dir, "depth": "depth", "normals": "normal"}[task]


DATASETS: dict[str, DatasetSpec] = {
    "nyuv2": DatasetSpec("nyuv2", "label", NYUV2_CLASSES, ("segmentation", "depth", "normals"), 288, 384, "metric"),
    "cityscapes": DatasetSpec("cityscapes", "label_7", CITYSCAPES7_CLASSES, ("segmentation", "depth"), 128, 256,
                              "inverse"),
    "cityscapes19": DatasetSpec("cityscapes19", "label_19", CITYSCAPES19_CLASSES, ("segmentation", "depth"),
                                128, 256, "inverse"),
    "synth": DatasetSpec("synth", "label", SYNTH_CLASSES, ("segmentation", "depth", "normals"), 96, 128, "metric"),
}


def get_dataset_spec(name: str) -> DatasetSpec:
    """Return the spec of a dataset kind, with an error listing the valid names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}") from None
