"""The README's examples work: its Python snippets run, and every ``mtlx_core`` name it shows exists.

- every ```` ```python ```` block runs as it is, in a fresh namespace, in a temporary folder; a block whose info
  string is ``python no-run`` (one that needs a built store, say) only has its imports checked;
- every ``import`` / ``from ... import`` of a Python block, and of ``python -c`` code in the text, imports;
- every inline ``mtlx_core.a.b`` name (also ``mtlx_core.a.b(...)``) resolves to a module or an attribute;
- every ``python -m mtlx_core.x`` command names a runnable module, every file it names (``tests/...py``,
  ``bench/...py``, ``docs/...md``, ...) exists;
- the README's second command (the test command) is exactly the command of ``.ci/run``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from mtlx_core.data.dataset import MTLDataset

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
BLOCKS = [(m.group(1).split(), m.group(2)) for m in FENCE.finditer(README)]
PYTHON = [code for info, code in BLOCKS if info and info[0] == "python"]
RUNNABLE = [code for info, code in BLOCKS if info and info[0] == "python" and "no-run" not in info[1:]]
INLINE_NAME = re.compile(r"`(mtlx_core(?:\.\w+)+)(?:\([^`]*\))?`")
FROM_IMPORT = re.compile(r"\bfrom\s+(mtlx_core[\w.]*)\s+import\s+(\w+(?:\s*,\s*\w+)*)")
PYTHON_M = re.compile(r"python3?\s+-m\s+(mtlx_core[\w.]*)")
REPO_FILE = re.compile(r"\b((?:tests|bench|docs|mtlx_core|pages)/[\w./]*\.(?:py|md))")


def resolve(dotted: str) -> object:
    """The module or attribute ``dotted`` names: the longest importable prefix, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        try:
            obj: object = importlib.import_module(candidate)
        except ModuleNotFoundError as exc:
            if exc.name is None or not candidate.startswith(exc.name):
                raise  # the module exists but one of its own imports is missing
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                raise AssertionError(f"{dotted}: {'.'.join(parts[:i])} has no attribute path {'.'.join(parts[i:])}")
            obj = getattr(obj, attr)
        return obj
    raise AssertionError(f"{dotted}: no such module")


def snippet_imports(code: str) -> list[str]:
    """Dotted names a snippet imports: ``import a.b`` -> ``a.b``, ``from a import b`` -> ``a.b``."""
    names: list[str] = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_the_readme_has_a_runnable_python_snippet() -> None:
    assert RUNNABLE, "the README shows no runnable Python snippet"


def test_resolve_rejects_names_that_do_not_exist() -> None:
    assert resolve("mtlx_core.data.dataset.MTLDataset") is MTLDataset
    with pytest.raises(AssertionError, match="no attribute"):
        resolve("mtlx_core.data.MTLDataset")
    with pytest.raises(AssertionError, match="no such module"):
        resolve("mtlx_core_nope.x")


@pytest.mark.parametrize("code", PYTHON, ids=[f"python{i}" for i in range(len(PYTHON))])
def test_every_name_a_snippet_imports_exists(code: str) -> None:
    for name in snippet_imports(code):
        resolve(name)


def test_every_mtlx_core_name_in_the_text_exists() -> None:
    names = set(INLINE_NAME.findall(README))
    names |= {f"{mod}.{n.strip()}" for mod, group in FROM_IMPORT.findall(README) for n in group.split(",")}
    assert "mtlx_core.store.query" in names
    for name in sorted(names):
        resolve(name)


def test_every_python_m_command_names_a_runnable_module() -> None:
    modules = set(PYTHON_M.findall(README))
    assert "mtlx_core.demo" in modules
    for mod in sorted(modules):
        spec = importlib.util.find_spec(mod)
        assert spec is not None, f"README runs `python -m {mod}`: no such module"
        if spec.submodule_search_locations is not None:  # a package runs its __main__
            assert importlib.util.find_spec(f"{mod}.__main__") is not None, f"{mod} has no __main__"


def test_every_file_the_readme_names_exists() -> None:
    files = set(REPO_FILE.findall(README))
    assert "tests/test_readme.py" in files
    assert not sorted(f for f in files if not (ROOT / f).is_file())


def test_readme_test_command_is_what_ci_runs() -> None:
    first_bash = next(code for info, code in BLOCKS if info and info[0] == "bash")
    readme_cmd = first_bash.splitlines()[1]
    ci = [ln for ln in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if ln.strip() and not ln.startswith(("#", "set ", "cd "))]
    assert ci == [readme_cmd]


@pytest.mark.parametrize("code", RUNNABLE, ids=[f"python{i}" for i in range(len(RUNNABLE))])
def test_python_snippet_runs(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    exec(compile(code, "README.md", "exec"), namespace)
