"""Task registry: ``build_tasks(dataset_spec, names)`` gives the Task objects of a run."""

from __future__ import annotations

from collections.abc import Sequence

from mtlx_core.data.layout import DatasetSpec
from mtlx_core.tasks.base import MetricAccumulator, Task
from mtlx_core.tasks.depth import DepthTask
from mtlx_core.tasks.normals import NormalsTask
from mtlx_core.tasks.segmentation import SegmentationTask

TASK_NAMES: tuple[str, ...] = ("segmentation", "depth", "normals")


def build_task(name: str, spec: DatasetSpec) -> Task:
    """Build one task for a dataset kind; the error lists the valid names."""
    if name not in spec.tasks:
        raise ValueError(f"unknown task {name!r} for dataset {spec.name!r}; valid tasks: {', '.join(spec.tasks)}")
    if name == "segmentation":
        return SegmentationTask(spec.classes)
    if name == "depth":
        return DepthTask(spec.depth_kind)
    return NormalsTask()


def build_tasks(spec: DatasetSpec, names: Sequence[str] | None = None) -> dict[str, Task]:
    """Tasks of a run in a fixed order (segmentation, depth, normals)."""
    wanted = list(spec.tasks if names is None else names)
    if not wanted:
        raise ValueError(f"no task selected; valid tasks: {', '.join(spec.tasks)}")
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"duplicate task in {wanted}")
    for n in wanted:
        build_task(n, spec)  # validates
    return {n: build_task(n, spec) for n in TASK_NAMES if n in wanted}


__all__ = ["TASK_NAMES", "DepthTask", "MetricAccumulator", "NormalsTask", "SegmentationTask", "Task",
           "build_task", "build_tasks"]
