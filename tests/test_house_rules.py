"""The house rules (docs/CONVENTIONS.md), read from the imports of the source files.

- the app (``app.py``, ``pages/``) imports from the project only ``mtlx_core.store.query``, ``mtlx_core.live``
  and ``mtlx_core.uploads`` (and its own page modules);
- no module of ``mtlx_core`` imports streamlit;
- importing ``mtlx_core.store.query`` (the app's read path) does not import torch.

Every import statement counts, also those inside functions and ``if TYPE_CHECKING:`` blocks.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "pages"
APP_FILES = sorted([ROOT / "app.py", *PAGES.glob("*.py")])
APP_MAY_IMPORT = ("mtlx_core.store.query", "mtlx_core.live", "mtlx_core.uploads")
PAGE_MODULES = {p.stem for p in PAGES.glob("*.py")}

#: pages that break the rule today, with what they import instead; the marker is strict, so the test fails
#: as soon as a page is fixed and its entry here must go
KNOWN_VIOLATIONS: dict[str, str] = {}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    """Whether ``dotted`` names a module or package of this repository (by its file)."""
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported_modules(source: str, module: str) -> set[str]:
    """Absolute names of the modules a source imports (``from pkg import mod`` gives ``pkg.mod`` when ``mod`` is
    a module of this repository); ``module`` is the importing module's dotted name, for relative imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".")[: -node.level]
                base = ".".join([*package, node.module] if node.module else package)
            else:
                base = node.module or ""
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if _is_module(full) else base)
    return found


def _project_imports(path: Path) -> set[str]:
    """The project modules a file imports: ``mtlx_core...`` and ``pages...`` (also pages imported by bare name)."""
    names = imported_modules(path.read_text(encoding="utf-8"), _module_name(path))
    return {n for n in names if n.split(".")[0] in ("mtlx_core", "pages") or n in PAGE_MODULES}


def _app_may_import(name: str) -> bool:
    return name in APP_MAY_IMPORT or name == "pages" or name.startswith("pages.") or name in PAGE_MODULES


def test_import_reader_resolves_from_imports_of_modules_and_of_names() -> None:
    src = ("import mtlx_core.live\nfrom mtlx_core.store import query\nfrom mtlx_core.store.codec import decode_png\n"
           "def f():\n    from mtlx_core import uploads\n")
    assert imported_modules(src, "pages.x") == {"mtlx_core.live", "mtlx_core.store.query", "mtlx_core.store.codec",
                                                "mtlx_core.uploads"}
    assert imported_modules("from . import figures\nfrom .common import q\n", "pages.x") == {
        "pages.figures", "pages.common"}


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=str(p.relative_to(ROOT)),
                  marks=[pytest.mark.xfail(strict=True, reason=f"imports {KNOWN_VIOLATIONS[str(p.relative_to(ROOT))]}")]
                  if str(p.relative_to(ROOT)) in KNOWN_VIOLATIONS else [])
     for p in APP_FILES],
)
def test_app_imports_only_query_live_and_uploads(path: Path) -> None:
    bad = sorted(n for n in _project_imports(path) if not _app_may_import(n))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}; the app may import only {APP_MAY_IMPORT}"


def test_known_violations_name_existing_pages() -> None:
    assert set(KNOWN_VIOLATIONS) <= {str(p.relative_to(ROOT)) for p in APP_FILES}


def test_mtlx_core_never_imports_streamlit() -> None:
    offenders = {}
    for path in sorted((ROOT / "mtlx_core").rglob("*.py")):
        names = imported_modules(path.read_text(encoding="utf-8"), _module_name(path))
        hits = sorted(n for n in names if n.split(".")[0] == "streamlit")
        if hits:
            offenders[str(path.relative_to(ROOT))] = hits
    assert not offenders, f"mtlx_core imports streamlit: {offenders}"


def test_store_query_does_not_import_torch() -> None:
    code = ("import sys\nimport mtlx_core.store.query\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         timeout=120)
    assert out.stdout.strip() == "[]", f"importing mtlx_core.store.query imported {out.stdout.strip()}"
