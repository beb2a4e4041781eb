"""Registries of models and tasks that live outside ``mtlx_core``, and how plugins are loaded.

A plugin is a module that calls :func:`register_model` and/or :func:`register_task` when imported. It is loaded
by an entry point of group ``mtlx.plugins`` (the entry point names a module, or a callable that registers),
by ``--plugin module.path`` on every CLI, or by the ``MTLX_PLUGINS`` environment variable (comma-separated
module paths; read by the app). SegNet-MTAN, DeepLab and the three built-in tasks are registered the same way
(source ``mtlx_core (built in)``).

Public API::

    register_model(name, factory, *, explain_layer, task_modules, input_multiple=1) -> ModelEntry
    register_task(name, factory)                  # factory(spec: DatasetSpec) -> Task
    load_plugins(modules=(), *, entry_points=True, env=True) -> list[str]
    get_model_entry(name) -> ModelEntry          # unknown -> ValueError listing registered names and sources
    model_names() -> list[str]
    get_task_entry(name) -> TaskEntry; task_names() -> list[str]   # registration order: built-ins first
    add_plugin_argument(parser)                   # ``--plugin`` (repeatable) of the CLIs
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import inspect
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from mtlx_core.data.layout import DatasetSpec
    from mtlx_core.tasks.base import Task

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mtlx.plugins"
ENV_VAR = "MTLX_PLUGINS"
BUILTIN = "mtlx_core (built in)"
HOW_TO_LOAD = (f"load the plugin that registers it with --plugin MODULE, the {ENV_VAR} environment variable "
               f"(comma-separated modules) or an entry point of group {ENTRY_POINT_GROUP!r}")


class PluginError(ValueError):
    """A plugin that cannot be loaded, or a registration that conflicts with an existing one."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: ``factory(task_channels, **kwargs) -> nn.Module`` whose forward returns a dict."""

    name: str
    factory: Callable[..., nn.Module]
    explain_layer: str | dict[str, str]
    task_modules: dict[str, tuple[str, ...]]
    input_multiple: int = 1
    source: str = ""


@dataclass(frozen=True)
class TaskEntry:
    """A registered task: ``factory(spec: DatasetSpec) -> Task``."""

    name: str
    factory: Callable[[DatasetSpec], Task]
    source: str = ""


_MODELS: dict[str, ModelEntry] = {}
_TASKS: dict[str, TaskEntry] = {}
_LOADED: dict[str, str] = {}  # what load_plugins imported -> how (module path or entry point)
_loading: list[str] = []  # the plugin being imported right now (registrations record it as their source)
_entry_points_scanned = False


def _caller_source() -> str:
    if _loading:
        return _loading[-1]
    frame = inspect.currentframe()
    try:
        while frame is not None and frame.f_globals.get("__name__") == __name__:
            frame = frame.f_back
        return str(frame.f_globals.get("__name__", "?")) if frame is not None else "?"
    finally:
        del frame


def _check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise PluginError(f"{kind} name must be a non-empty string of letters, digits, '_' or '-', got {name!r}")
    return name


def register_model(name: str, factory: Callable[..., nn.Module], *, explain_layer: str | Mapping[str, str],
                   task_modules: Mapping[str, Sequence[str]], input_multiple: int = 1,
                   source: str | None = None) -> ModelEntry:
    """Register model ``name`` (see the module docstring); registering the same factory again is a no-op.

    ``explain_layer``: a module name of the factory's module (one for all tasks) or ``{task: module name}``;
    ``task_modules``: ``{task: module names}`` of the modules that belong to that task only (every other module
    is shared); ``input_multiple``: what the input's height and width must divide by.
    """
    _check_name("model", name)
    if not callable(factory):
        raise PluginError(f"model {name!r}: factory must be callable, got {type(factory).__name__}")
    if isinstance(explain_layer, Mapping):
        if not explain_layer or not all(isinstance(k, str) and isinstance(v, str) and v
                                        for k, v in explain_layer.items()):
            raise PluginError(f"model {name!r}: explain_layer must be a module name or a non-empty dict "
                              f"task -> module name, got {explain_layer!r}")
        layer: str | dict[str, str] = dict(explain_layer)
    elif isinstance(explain_layer, str) and explain_layer:
        layer = explain_layer
    else:
        raise PluginError(f"model {name!r}: explain_layer must be a module name or a dict task -> module name")
    if not isinstance(task_modules, Mapping):
        raise PluginError(f"model {name!r}: task_modules must be a dict task -> module names")
    modules: dict[str, tuple[str, ...]] = {}
    for task, names in task_modules.items():
        if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
            raise PluginError(f"model {name!r}: task_modules[{task!r}] must be a list of module names, got {names!r}")
        modules[str(task)] = tuple(names)
    if isinstance(input_multiple, bool) or not isinstance(input_multiple, int) or input_multiple < 1:
        raise PluginError(f"model {name!r}: input_multiple must be a positive int, got {input_multiple!r}")
    entry = ModelEntry(name, factory, layer, modules, input_multiple, source or _caller_source())
    old = _MODELS.get(name)
    if old is not None:
        if old.factory is factory and old.explain_layer == layer and old.task_modules == modules \
                and old.input_multiple == input_multiple:
            return old
        raise PluginError(f"model {name!r} is already registered by {old.source}")
    _MODELS[name] = entry
    logger.debug("registered model %s from %s", name, entry.source)
    return entry


def register_task(name: str, factory: Callable[[DatasetSpec], Task], *, source: str | None = None) -> None:
    """Register task ``name``: ``factory(spec)`` returns its ``Task`` for a dataset kind (raise ``ValueError``
    for a dataset it does not support). Registering the same factory again is a no-op."""
    _check_name("task", name)
    if not callable(factory):
        raise PluginError(f"task {name!r}: factory must be callable, got {type(factory).__name__}")
    old = _TASKS.get(name)
    if old is not None:
        if old.factory is factory:
            return
        raise PluginError(f"task {name!r} is already registered by {old.source}")
    _TASKS[name] = TaskEntry(name, factory, source or _caller_source())
    logger.debug("registered task %s from %s", name, _TASKS[name].source)


def _import_plugin(module: str, how: str) -> None:
    """Import ``module`` (``pkg.mod``), or import ``pkg.mod`` and call its ``func`` (``pkg.mod:func``)."""
    _loading.append(how)
    try:
        path, _, func = module.partition(":")
        imported = importlib.import_module(path)
        if func:
            getattr(imported, func)()
    except Exception as exc:  # ImportError, or anything the plugin raises while registering
        raise PluginError(f"plugin {module!r} ({how}) failed to import: {type(exc).__name__}: {exc}") from exc
    finally:
        _loading.pop()


def _load_entry_point(ep: importlib.metadata.EntryPoint) -> None:
    dist = getattr(getattr(ep, "dist", None), "name", None)
    how = f"entry point {ep.name} = {ep.value}" + (f" of {dist}" if dist else "")
    _loading.append(how)
    try:
        obj = ep.load()
        if not isinstance(obj, ModuleType) and callable(obj):
            obj()
    except Exception as exc:
        raise PluginError(f"plugin {how} failed to load: {type(exc).__name__}: {exc}") from exc
    finally:
        _loading.pop()
    _LOADED[ep.value] = how


def env_modules() -> list[str]:
    """Module paths listed in ``MTLX_PLUGINS`` (comma-separated; blanks ignored)."""
    return [m.strip() for m in os.environ.get(ENV_VAR, "").split(",") if m.strip()]


def load_plugins(modules: Sequence[str] = (), *, entry_points: bool = True, env: bool = True) -> list[str]:
    """Import the plugin ``modules``, those of ``MTLX_PLUGINS`` (``env``) and the entry points of group
    ``mtlx.plugins`` (``entry_points``); returns what this call loaded (each plugin is loaded once per
    process). A plugin that fails to import raises :class:`PluginError` naming it."""
    global _entry_points_scanned
    loaded: list[str] = []
    wanted = [(m, f"--plugin {m}") for m in modules] + ([(m, f"{ENV_VAR}={m}") for m in env_modules()] if env else [])
    for module, how in wanted:
        if module in _LOADED:
            continue
        _import_plugin(module, how)
        _LOADED[module] = how
        loaded.append(module)
    if entry_points:
        _entry_points_scanned = True
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.value in _LOADED:
                continue
            _load_entry_point(ep)
            loaded.append(ep.value)
    if loaded:
        logger.info("loaded plugins: %s", ", ".join(loaded))
    return loaded


def plugin_module(source: str) -> str:
    """The module (or entry point value) to load for a registration ``source``."""
    for prefix in ("--plugin ", f"{ENV_VAR}="):
        if source.startswith(prefix):
            return source[len(prefix):]
    if source.startswith("entry point ") and " = " in source:
        return source.split(" = ", 1)[1].split(" of ", 1)[0]
    return source


def _ensure_builtins() -> None:
    # importing them registers segnet_mtan, deeplab_resnet34 and the tasks segmentation, depth, normals
    import mtlx_core.models
    import mtlx_core.tasks  # noqa: F401


def _listing(entries: Mapping[str, ModelEntry] | Mapping[str, TaskEntry]) -> str:
    """``a, b (registered: a from X, b from Y)``."""
    where = ", ".join(f"{n} from {e.source}" for n, e in entries.items())
    return f"{', '.join(entries) or 'none'} (registered: {where or 'nothing'})"


def _lookup_miss() -> None:
    """On an unknown name, load the entry points and ``MTLX_PLUGINS`` once (a name may come from there)."""
    if not _entry_points_scanned:
        load_plugins(entry_points=True, env=True)


def _entry(registry: Mapping[str, Any], kind: str, name: str) -> Any:
    """``registry[name]`` after the built-ins (and, on a miss, the plugins) are loaded; the error lists every
    registered ``kind`` and where it came from."""
    _ensure_builtins()
    if name not in registry:
        _lookup_miss()
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; valid {kind}s: {_listing(registry)}. "
                         f"For a {kind} of a plugin, {HOW_TO_LOAD}")
    return registry[name]


def get_model_entry(name: str) -> ModelEntry:
    """The registered model ``name``; the error lists every registered model and where it came from."""
    entry: ModelEntry = _entry(_MODELS, "model", name)
    return entry


def model_names() -> list[str]:
    """Registered model names, built-ins first."""
    _ensure_builtins()
    return list(_MODELS)


def get_task_entry(name: str) -> TaskEntry:
    """The registered task ``name``; the error lists every registered task and where it came from."""
    entry: TaskEntry = _entry(_TASKS, "task", name)
    return entry


def task_names() -> list[str]:
    """Registered task names in their canonical order: segmentation, depth, normals, then plugins'."""
    _ensure_builtins()
    return list(_TASKS)


def loaded_plugins() -> list[str]:
    """What ``load_plugins`` imported in this process (modules and entry points), for worker processes."""
    return list(_LOADED)


def add_plugin_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--plugin MODULE`` (repeatable) to a CLI; call ``load_plugins(args.plugin)`` after parsing."""
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import a plugin module that registers models/tasks (MODULE or MODULE:FUNCTION to call; "
                             "repeatable; entry points of "
                             f"group {ENTRY_POINT_GROUP!r} and {ENV_VAR} are loaded too)")


def load_cli_plugins(args: argparse.Namespace | Any) -> list[str]:
    """``load_plugins`` of a parsed CLI's ``--plugin`` values (with entry points and ``MTLX_PLUGINS``)."""
    return load_plugins(list(getattr(args, "plugin", None) or ()))
