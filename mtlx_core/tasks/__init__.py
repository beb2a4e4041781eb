"""Task registry: ``build_tasks(dataset_spec, names)`` gives the Task objects of a run.

The built-in tasks (segmentation, depth, normals) are registered in ``mtlx_core.plugins`` like a plugin's
(``register_task(name, factory)``, ``factory(spec) -> Task``); a registered task derives its target from the
dataset's stored labels (``Task.sources`` / ``Task.derive_target``) and comes after the built-ins.
"""

from __future__ import annotations

from collections.abc import Sequence

from mtlx_core import plugins
from mtlx_core.data.layout import DatasetSpec
from mtlx_core.tasks.base import MetricAccumulator, Task
from mtlx_core.tasks.depth import DepthTask
from mtlx_core.tasks.normals import NormalsTask
from mtlx_core.tasks.segmentation import SegmentationTask

#: the built-in tasks, in their canonical order (registered tasks come after them)
TASK_NAMES: tuple[str, ...] = ("segmentation", "depth", "normals")

plugins.register_task("segmentation", lambda spec: SegmentationTask(spec.classes), source=plugins.BUILTIN)
plugins.register_task("depth", lambda spec: DepthTask(spec.depth_kind), source=plugins.BUILTIN)
plugins.register_task("normals", lambda spec: NormalsTask(), source=plugins.BUILTIN)


def valid_task_names(spec: DatasetSpec) -> list[str]:
    """The dataset's stored tasks, then every task registered by a plugin."""
    return [*spec.tasks, *(n for n in plugins.task_names() if n not in TASK_NAMES)]


def _unknown(name: str, spec: DatasetSpec) -> ValueError:
    registered = ", ".join(f"{n} ({plugins.get_task_entry(n).source})" for n in plugins.task_names())
    return ValueError(f"unknown task {name!r} for dataset {spec.name!r}; valid tasks: "
                      f"{', '.join(valid_task_names(spec))}; registered tasks: {registered}. "
                      f"For a task of a plugin, {plugins.HOW_TO_LOAD}")


def build_task(name: str, spec: DatasetSpec) -> Task:
    """Build one task for a dataset kind; the error lists the valid names and where they are registered."""
    if name in TASK_NAMES:
        if name not in spec.tasks:
            raise _unknown(name, spec)
        return plugins.get_task_entry(name).factory(spec)
    try:
        entry = plugins.get_task_entry(name)
    except ValueError:
        raise _unknown(name, spec) from None
    try:
        task = entry.factory(spec)
    except ValueError as exc:
        raise ValueError(f"task {name!r} ({entry.source}) does not support dataset {spec.name!r}: {exc}") from exc
    if not isinstance(task, Task):
        raise TypeError(f"task factory of {name!r} ({entry.source}) returned {type(task).__name__}, not a Task")
    if getattr(task, "name", None) != name:
        raise ValueError(f"task {name!r} ({entry.source}) builds a Task named {getattr(task, 'name', None)!r}")
    sources = tuple(task.sources)
    if not sources or any(s not in TASK_NAMES for s in sources):
        raise ValueError(f"task {name!r} ({entry.source}) must derive its target from stored labels: its "
                         f"sources {sources} must be a non-empty subset of {', '.join(TASK_NAMES)}")
    missing = [s for s in sources if s not in spec.tasks]
    if missing:
        raise ValueError(f"task {name!r} needs the stored label(s) {', '.join(missing)}, which dataset "
                         f"{spec.name!r} does not have (it stores {', '.join(spec.tasks)})")
    return task


def build_tasks(spec: DatasetSpec, names: Sequence[str] | None = None) -> dict[str, Task]:
    """Tasks of a run in a fixed order: segmentation, depth, normals, then registered tasks."""
    wanted = list(spec.tasks if names is None else names)
    if not wanted:
        raise ValueError(f"no task selected; valid tasks: {', '.join(valid_task_names(spec))}")
    if len(set(wanted)) != len(wanted):
        raise ValueError(f"duplicate task in {wanted}")
    built = {n: build_task(n, spec) for n in wanted}  # validates
    return {n: built[n] for n in plugins.task_names() if n in built}


__all__ = ["TASK_NAMES", "DepthTask", "MetricAccumulator", "NormalsTask", "SegmentationTask", "Task",
           "build_task", "build_tasks", "valid_task_names"]
