"""The package's layering, read from the source with `ast` (nothing is imported): every module has a layer,
no import runs up the layers, there are no import cycles, and modules stay small.

Layers, lowest first (docs/architecture.md draws them). A module may import its own layer and those below.
A module's folder decides its layer, so the folder tree shows the architecture: a subcommand module inside
a package (service/cli.py) belongs to that package's layer and may only drive what lies below it.

  foundation    edge_vos, config (typed-config helpers), labels (the label-map convention), ratelog
                (rate-limited logging of what input drives)
  wire          wire/ (what the service and its clients say: the mask stream's format, CURVE for clients)
  model         model/, readout/ (pure tensor code), data/ (datasets on disk), prompt/ (clicks -> mask)
  backends      backends/ (how the network's three calls run: torch, ONNX Runtime, TensorRT; the build cache)
  tracker       tracker/ (one stream: memory, objects, step())
  applications  service/, client, view/, evaluation/, train/, ros2/ (rosbag2 and DDS, beside the service)
  cli           edge_vos.cli (the `edge-vos` entry point), the top-level *_cli modules, and program (where
                `edge-vos run` composes the service and its web view)

Every import counts, also those inside functions and under TYPE_CHECKING: a lazy import is still a
dependency, and a type-only one still means the lower layer knows the upper one. Cycles are forbidden
between modules and between packages (edge_vos/service and edge_vos/view may not import each other in
either direction through any chain, even though both are applications).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edge_vos"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("edge_vos", "edge_vos.config", "edge_vos.labels", "edge_vos.ratelog", "edge_vos.allocator")),
    ("wire", ("edge_vos.wire",)),
    ("model", ("edge_vos.model", "edge_vos.readout", "edge_vos.data", "edge_vos.prompt")),
    ("backends", ("edge_vos.backends",)),
    ("tracker", ("edge_vos.tracker",)),
    ("applications", ("edge_vos.service", "edge_vos.client", "edge_vos.view", "edge_vos.evaluation",
                      "edge_vos.train", "edge_vos.ros2")),
    ("cli", ("edge_vos.cli", "edge_vos.engines_cli", "edge_vos.client_cli", "edge_vos.ctl_cli", "edge_vos.run_cli",
             "edge_vos.program", "edge_vos.run_config")),
)
LAYER_NAMES = [name for name, _ in LAYERS]

# Packages that must not reach past the layer below them: the service moves frames and label maps and
# knows nothing of tensors, so it talks to the network only through the tracker.
NO_REACHING_DOWN: dict[str, tuple[str, ...]] = {
    "edge_vos.service": ("edge_vos.model", "edge_vos.readout", "edge_vos.backends"),
}

# Modules allowed past MAX_LINES, each one cohesive thing (named in docs/architecture.md). An entry that
# is no longer long must be removed, so the list never vouches for a file it does not describe.
MAX_LINES = 400
LONG_MODULES: dict[str, str] = {
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported edge_vos module
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(modules: dict[str, Path]) -> Iterator[Import]:
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from pkg import sub` depends on the submodule when there is one, else on pkg itself.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:  # `import edge_vos.x.y` where y is a name
                    target = target.rpartition(".")[0]
                if target.startswith("edge_vos") and target != name:
                    yield Import(name, target, node.lineno)


def _subcommand_modules() -> set[str]:
    """Module names registered in edge_vos/cli.py's SUBCOMMANDS (read from the source)."""
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "SUBCOMMANDS" for t in targets):
                value = ast.literal_eval(node.value)  # type: ignore[arg-type]
                return {module for module, _ in value.values()}
    raise AssertionError("edge_vos/cli.py has no SUBCOMMANDS registry")


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or (prefix != "edge_vos" and module.startswith(prefix + "."))
            if inside and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], list[Import]]:
    modules = _modules()
    return modules, list(_imports(modules))


def test_every_module_has_a_layer_and_every_subcommand_a_module(graph) -> None:
    modules, _ = graph
    missing = sorted(_subcommand_modules() - set(modules))
    assert not missing, f"edge_vos/cli.py SUBCOMMANDS names modules that do not exist: {missing}"
    unplaced = sorted(m for m in modules if layer_of(m) is None)
    assert not unplaced, f"give these modules a layer in tests/test_layering.py and docs/architecture.md: {unplaced}"


def test_no_import_runs_up_the_layers(graph) -> None:
    modules, imports = graph
    upward = []
    for imp in imports:
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if src is not None and dst is not None and dst > src:
            where = f"{modules[imp.source].relative_to(PACKAGE.parent)}:{imp.line}"
            upward.append(f"{where}: {imp.source} ({LAYER_NAMES[src]}) imports {imp.target} ({LAYER_NAMES[dst]})")
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_the_service_reaches_the_network_only_through_the_tracker(graph) -> None:
    modules, imports = graph
    found = [
        f"{modules[imp.source].relative_to(PACKAGE.parent)}:{imp.line}: {imp.source} imports {imp.target}"
        for imp in imports
        for package, banned in NO_REACHING_DOWN.items()
        if _inside(imp.source, package) and any(_inside(imp.target, b) for b in banned)
    ]
    assert not found, "\n".join(found)


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles(graph) -> None:
    _, imports = graph
    edges: dict[str, set[str]] = {}
    for imp in imports:
        edges.setdefault(imp.source, set()).add(imp.target)
    assert _cycles(edges) == [], "module import cycles"


def package_of(module: str) -> str:
    """The package a module belongs to: `edge_vos.service.control` -> `edge_vos.service`; a top-level module
    (`edge_vos.client`, `edge_vos.program`) is its own unit."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _package_edges(imports: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for imp in imports:
        source, target = package_of(imp.source), package_of(imp.target)
        if source != target and target != "edge_vos":  # the package root is the foundation's version string
            edges.setdefault(source, set()).add(target)
    return edges


def test_no_cycles_between_packages(graph) -> None:
    """Modules may be acyclic while their packages are not (service/pipeline -> view/server and view/feed ->
    service/protocol): the packages of one layer must not depend on each other both ways either."""
    modules, imports = graph
    cycles = _cycles(_package_edges(imports))
    if cycles:
        detail = [f"{imp.source} -> {imp.target} ({modules[imp.source].relative_to(PACKAGE.parent)}:{imp.line})"
                  for imp in imports
                  if any(package_of(imp.source) in c and package_of(imp.target) in c
                         and package_of(imp.source) != package_of(imp.target) for c in cycles)]
        raise AssertionError(f"package import cycles {cycles}:\n" + "\n".join(detail))


def test_the_checks_catch_what_they_are_for() -> None:
    """The helpers above on made-up names: layers by folder, and a cycle is found."""
    assert layer_of("edge_vos.backends.cache") == LAYER_NAMES.index("backends")
    assert layer_of("edge_vos.backends.cli") == LAYER_NAMES.index("backends")  # where build-engines used to be
    assert layer_of("edge_vos.engines_cli") == LAYER_NAMES.index("cli")
    assert layer_of("edge_vos.training_tools") is None  # a prefix is a whole package name
    assert layer_of("edge_vos.backends") < layer_of("edge_vos.tracker.tracker")  # type: ignore[operator]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert package_of("edge_vos.service.control") == "edge_vos.service" and package_of("edge_vos.client") == \
        "edge_vos.client"
    # The loop issue #25 found: acyclic as modules, a cycle as packages.
    loop = [Import("edge_vos.service.pipeline", "edge_vos.view.server", 1),
            Import("edge_vos.view.feed", "edge_vos.service.protocol", 1)]
    assert _cycles({i.source: {i.target} for i in loop}) == []
    assert _cycles(_package_edges(loop)) == [["edge_vos.service", "edge_vos.view"]]


def test_modules_stay_small_unless_listed(graph) -> None:
    modules, _ = graph
    lines = {name: len(path.read_text().splitlines()) for name, path in modules.items()}
    too_long = {m: n for m, n in lines.items() if n > MAX_LINES and m not in LONG_MODULES}
    assert not too_long, f"split these (or name them in LONG_MODULES and docs/architecture.md): {too_long}"
    stale = sorted(m for m in LONG_MODULES if lines.get(m, 0) <= MAX_LINES)
    assert not stale, f"no longer long (or gone): remove from LONG_MODULES: {stale}"


def test_the_web_pages_scripts_stay_small() -> None:
    """The view's JavaScript is held to the same bound: plain ES modules, one job each (docs/view.md)."""
    scripts = sorted(PACKAGE.rglob("*.js"))
    assert scripts, "no scripts found under edge_vos/"
    too_long = {str(p.relative_to(PACKAGE.parent)): n for p in scripts
                if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not too_long, f"split these scripts into modules: {too_long}"


def test_tools_stay_small() -> None:
    """tools/ scripts follow the package's rule: one job each, at most MAX_LINES lines."""
    tools = Path(__file__).resolve().parents[1] / "tools"
    lines = {p.name: len(p.read_text().splitlines()) for p in sorted(tools.glob("*.py")) + sorted(tools.glob("*.sh"))}
    too_long = {name: n for name, n in lines.items() if n > MAX_LINES}
    assert not too_long, f"split these tools: {too_long}"
