"""The package's shape: layers, import direction, no cycles, small modules, no module-global state, cheap start-up.

Every .py file under gradcheck_cli/ is read with `ast` (nothing is imported, except by the start-up tests, which
import in a fresh interpreter). Every import counts: top-level, inside functions, under `if TYPE_CHECKING:`.

The layers, bottom up, are the ROOMS table below. A module may import a module of a lower layer, or one of its own
room; two rooms on one layer may not import each other. A new module fails until it is given a room here.
"""

from __future__ import annotations

import ast
import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

PACKAGE = "gradcheck_cli"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE
MAX_LINES = 400
GUI_LIBRARIES = frozenset({"click", "rich"})


@dataclass(frozen=True)
class Room:
    """Modules that belong together on one layer. Members are relative to gradcheck_cli; a package means every
    module in it; "" is gradcheck_cli/__init__.py itself."""

    name: str
    layer: int
    members: tuple[str, ...]
    may_use_click_and_rich: bool = True


ROOMS: tuple[Room, ...] = (
    Room("data", 0, ("errors", "settings", "batch"), may_use_click_and_rich=False),
    Room("math", 1, ("numerics",), may_use_click_and_rich=False),
    Room("inputs", 1, ("inputs",), may_use_click_and_rich=False),
    Room("results", 2, ("report",), may_use_click_and_rich=False),
    Room("checks", 3, ("checks",), may_use_click_and_rich=False),
    Room("pipeline", 4, ("pipeline",), may_use_click_and_rich=False),
    Room("terminal", 4, ("terminal",)),
    Room("render", 5, ("render",)),
    # The Python API: the pipeline's front door for callers in Python, beside render (neither imports the other).
    Room("api", 5, ("api",), may_use_click_and_rich=False),
    Room("options", 6, ("options",)),
    Room("commands", 7, ("commands", "cli", "hook", "__main__", "")),
    Room("pytest plugin", 7, ("pytest_plugin",), may_use_click_and_rich=False),
)

# What importing a module alone may not pull in: the CLI starts cheaply, and a registry is only a table of names.
NOT_ON_IMPORT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gradcheck_cli.cli", ("numpy", "rich")),
    ("gradcheck_cli.numerics.losses", ("numpy", "rich", "click")),
    ("gradcheck_cli.inputs", ("numpy", "rich", "click")),
    ("gradcheck_cli.render", ("numpy", "rich", "click")),
)


# --- Reading the package -------------------------------------------------------------------------------------------


def discover_modules() -> dict[str, Path]:
    """Every module of the package, by dotted name: gradcheck_cli/render/__init__.py is gradcheck_cli.render."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = discover_modules()
# Directories that hold modules are packages even without an __init__.py (namespace packages).
PACKAGES = frozenset(".".join(path.parent.relative_to(PACKAGE_DIR.parent).parts) for path in MODULES.values())


def is_internal(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def exists(name: str) -> bool:
    """Whether `name` is a module file or a package of gradcheck_cli."""
    return name in MODULES or name in PACKAGES


def is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def parent_package(module: str) -> str:
    return module.rpartition(".")[0] or module


def room_of(module: str) -> Room | None:
    """The room a module belongs to: the longest table entry that is the module or a package holding it."""
    relative = "" if module == PACKAGE else module.removeprefix(PACKAGE + ".")
    matches = [
        (len(member), room)
        for room in ROOMS
        for member in room.members
        if (member == "" and relative == "") or (member and (relative == member or relative.startswith(member + ".")))
    ]
    return max(matches, key=lambda match: match[0])[1] if matches else None


def describe(module: str) -> str:
    room = room_of(module)
    return f"{module} ({room.name}, layer {room.layer})" if room else f"{module} (no layer)"


@dataclass(frozen=True)
class Import:
    """One imported module, as resolved from one import statement."""

    target: str  # dotted name; external ones as written (numpy.linalg, rich.console)
    line: int
    statement: str
    name: str = ""  # for `from package import name` when `name` is no module: the name read from the package

    def __str__(self) -> str:
        return f"line {self.line}: `{self.statement}`"

    def target_text(self) -> str:
        if self.name:
            return f"{self.target}.{self.name} is no module, so it is read from {describe(self.target)}"
        return describe(self.target)


@cache
def parse(module: str) -> ast.Module:
    path = MODULES[module]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def statement_text(node: ast.stmt) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 100 else text[:97] + "..."


def from_import_base(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` reads from, relative imports resolved against `module`."""
    if node.level == 0:
        return node.module or ""
    package = module if is_package(module) else parent_package(module)
    parts = package.split(".")
    if node.level > 1:
        parts = parts[: -(node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    """Every import in the module, wherever it is written, one entry per imported module.

    `from gradcheck_cli.pkg import name` is gradcheck_cli.pkg.name when that is a module or package, else
    gradcheck_cli.pkg (the name is defined there)."""
    found = []
    for node in ast.walk(parse(module)):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, node.lineno, statement_text(node)) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = from_import_base(module, node)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if alias.name != "*" and exists(candidate):
                    found.append(Import(candidate, node.lineno, statement_text(node)))
                else:
                    name = alias.name if alias.name != "*" and base in PACKAGES else ""
                    found.append(Import(base, node.lineno, statement_text(node), name))
    return tuple(
        sorted(set(found), key=lambda found_import: (found_import.line, found_import.target, found_import.name))
    )


def internal_imports(module: str) -> Iterator[Import]:
    """Imports of other gradcheck_cli modules."""
    return (each for each in imports_of(module) if is_internal(each.target) and each.target != module)


def report(problems: list[str], heading: str) -> None:
    """Fail with one readable message, no traceback, when there is anything to report."""
    if problems:
        pytest.fail("\n".join([heading, *(f"  {problem}" for problem in problems)]), pytrace=False)


def no_layer_message(module: str) -> str:
    return f"new module {module}: give it a layer in tests/test_architecture.py"


# --- Rule 1 and 2: import direction, and no click or rich below the terminal ------------------------------------------


def layer_violation(module: str, imported: Import) -> str | None:
    """Why `module` may not import `imported`, or None when it may."""
    target = imported.target
    if not exists(target):
        return f"{imported} -> {target} is not a module of {PACKAGE}"
    source_room, target_room = room_of(module), room_of(target)
    assert source_room is not None
    if target_room is None:
        return f"{imported} -> {target} has no layer"
    if target_room == source_room or target_room.layer < source_room.layer:
        return None
    where = "the same layer, another room" if target_room.layer == source_room.layer else "a higher layer"
    return f"{imported} -> {imported.target_text()}: {where}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module: str) -> None:
    """A module imports only lower layers or its own room, so each layer can be read, tested and changed without
    the ones above it (and math and inputs, or pipeline and terminal, stay independent of each other)."""
    if room_of(module) is None:
        imported = sorted({each.target for each in internal_imports(module)})
        pytest.fail(f"{no_layer_message(module)}\n  it imports: {', '.join(imported) or 'nothing'}", pytrace=False)
    problems = [problem for each in internal_imports(module) if (problem := layer_violation(module, each))]
    report(problems, f"{describe(module)} imports modules it may not (only lower layers, or its own room):")


@pytest.mark.parametrize(
    "module", sorted(module for module in MODULES if (room := room_of(module)) and not room.may_use_click_and_rich)
)
def test_core_layers_do_not_import_click_or_rich(module: str) -> None:
    """Data, math, inputs, results, checks and the pipeline know nothing of the terminal: they work as a library,
    in tests and in other front ends, and importing them never pays for click or rich."""
    problems = [str(each) for each in imports_of(module) if each.target.partition(".")[0] in GUI_LIBRARIES]
    report(problems, f"{describe(module)} imports click or rich (only terminal and the layers above it may):")


# --- Rule 3: no import cycles -----------------------------------------------------------------------------------------


def import_graph() -> dict[str, dict[str, list[Import]]]:
    """module -> imported module -> the imports making that edge, over modules that exist as files.

    A module reaching its own package's __init__ (`from gradcheck_cli.inputs import register` inside
    gradcheck_cli/inputs/csv_format.py) is no edge: Python runs that __init__ first anyway, and a registry __init__
    that imports its members is the designed shape."""
    graph: dict[str, dict[str, list[Import]]] = {module: {} for module in MODULES}
    for module in MODULES:
        for each in internal_imports(module):
            if each.target in MODULES and each.target != parent_package(module):
                graph[module].setdefault(each.target, []).append(each)
    return graph


def strongly_connected(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module: each holds at least one cycle."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = lowest[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph[module]:
            if imported not in index:
                visit(imported)
                lowest[module] = min(lowest[module], lowest[imported])
            elif imported in on_stack:
                lowest[module] = min(lowest[module], index[imported])
        if lowest[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(components)


def shortest_cycle(graph: dict[str, dict[str, list[Import]]], start: str, within: set[str]) -> list[str]:
    """The shortest chain of imports from `start` back to itself, staying inside one component."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for imported in sorted(graph[module]):
                if imported == start:
                    cycle = [module]
                    while cycle[-1] != start:
                        cycle.append(came_from[cycle[-1]])
                    return [start, *reversed(cycle[:-1]), start]
                if imported in within and imported not in came_from:
                    came_from[imported] = module
                    following.append(imported)
        frontier = following
    raise AssertionError(f"{start} is in a strongly connected component but on no cycle")


def find_cycles(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """For every component, the shortest cycle through each of its modules, each cycle once."""
    cycles: dict[tuple[str, ...], list[str]] = {}
    for component in strongly_connected(graph):
        for module in component:
            cycle = shortest_cycle(graph, module, set(component))
            lowest = cycle.index(min(cycle[:-1]))
            cycles.setdefault(tuple(cycle[lowest:-1] + cycle[:lowest]), cycle)
    return [[*key, key[0]] for key in sorted(cycles)]


def test_no_import_cycles() -> None:
    """No chain of imports leads back to where it started (counting function-level and TYPE_CHECKING imports):
    a cycle makes import order matter and ties modules together so neither can change alone."""
    graph = import_graph()
    problems = []
    for cycle in find_cycles(graph):
        problems.append(" -> ".join(cycle))
        for module, imported in itertools.pairwise(cycle):
            problems += [f"    {module} {each}" for each in graph[module][imported]]
    report(problems, "import cycles among gradcheck_cli modules:")


# --- Rule 4 and 5: every module has a layer, and stays small ---------------------------------------------------------


def test_every_module_has_a_layer() -> None:
    """The layer table covers the whole package, so no module escapes the import rules by being new."""
    report(
        [no_layer_message(module) for module in sorted(MODULES) if room_of(module) is None], "modules with no layer:"
    )


def test_modules_are_short() -> None:
    """No module grows past MAX_LINES lines: a long one is two modules waiting to be split."""
    lengths = {module: len(path.read_text(encoding="utf-8").splitlines()) for module, path in MODULES.items()}
    problems = [f"{module}: {lines} lines" for module, lines in sorted(lengths.items()) if lines > MAX_LINES]
    report(problems, f"modules longer than {MAX_LINES} lines:")


# --- Rule 6: no module-global mutable state -----------------------------------------------------------------------


def module_level_statements(node: ast.AST) -> Iterator[ast.stmt]:
    """Statements that run at import time: the module body, and inside its if/try/with/for blocks, not defs."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if isinstance(child, ast.stmt):
            yield child
        if isinstance(child, ast.stmt | ast.excepthandler | ast.match_case):
            yield from module_level_statements(child)


MUTABLE_CALLS = {"list": "list", "set": "set", "dict": "dict", "bytearray": "list", "deque": "list"}
MUTABLE_CALLS |= {"defaultdict": "dict", "OrderedDict": "dict", "Counter": "dict"}


def mutable_kind(value: ast.expr) -> str | None:
    """'list', 'set' or 'dict' when the expression builds a new mutable container, else None."""
    match value:
        case ast.List() | ast.ListComp():
            return "list"
        case ast.Set() | ast.SetComp():
            return "set"
        case ast.Dict() | ast.DictComp():
            return "dict"
        case ast.Call(func=ast.Name(id=name) | ast.Attribute(attr=name)):
            return MUTABLE_CALLS.get(name)
    return None


def is_constant_name(name: str) -> bool:
    return name.strip("_").replace("_", "").isupper()


def bindings(statement: ast.stmt) -> Iterator[tuple[str, ast.expr]]:
    """(name, value) for each plain name a module-level assignment binds to a value it spells out."""
    if isinstance(statement, ast.Assign):
        pairs = [(target, statement.value) for target in statement.targets]
    elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
        pairs = [(statement.target, statement.value)]
    else:
        return
    for target, value in pairs:
        if isinstance(target, ast.Name):
            yield target.id, value
        elif isinstance(target, ast.Tuple | ast.List) and isinstance(value, ast.Tuple | ast.List):
            # a, b = [], {}: pair them up; a, b = make() is not a literal and is not judged
            names = [name.id if isinstance(name, ast.Name) else None for name in target.elts]
            if len(names) == len(value.elts):
                yield from ((name, item) for name, item in zip(names, value.elts, strict=True) if name)


def mutable_global_problems(module: str) -> Iterator[str]:
    tree = parse(module)
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            yield f"{module} line {node.lineno}: `{statement_text(node)}` (pass state in, or keep it on an object)"
    for statement in module_level_statements(tree):
        for name, value in bindings(statement):
            kind = mutable_kind(value)
            if kind is None or (is_constant_name(name) and kind == "dict"):
                continue
            advice = "make it a tuple or frozenset" if is_constant_name(name) else "module-global state"
            yield f"{module} line {statement.lineno}: `{statement_text(statement)}` (a mutable {kind}: {advice})"


def test_no_module_global_mutable_state() -> None:
    """No `global` statement and no mutable list, set or dict bound at module level (UPPER_CASE dicts are
    registries and allowed): state that lives in a module leaks between calls, tests and threads."""
    report(
        [problem for module in sorted(MODULES) for problem in mutable_global_problems(module)],
        "module-global mutable state:",
    )


# --- Rule 7: start-up stays cheap ---------------------------------------------------------------------------------

# Run in a fresh interpreter: imports argv[1], then prints, for each of argv[2:] that got imported, the chain of
# modules whose import brought it in (recorded by a meta-path finder that only watches).
IMPORT_PROBE = """
import importlib, json, sys
watched = set(sys.argv[2:])
chains = {name: ["(before the import: site or a .pth file)"] for name in watched if name in sys.modules}
class Watch:
    @staticmethod
    def find_spec(name, path=None, target=None):
        top = name.partition(".")[0]
        if top in watched and top not in chains:
            chain, frame = [], sys._getframe(1)
            while frame is not None:
                if frame.f_code.co_name == "<module>":
                    chain.append(frame.f_globals.get("__name__", "?"))
                frame = frame.f_back
            chains[top] = [module for module in reversed(chain) if module != "__main__"]
        return None
sys.meta_path.insert(0, Watch)
importlib.import_module(sys.argv[1])
print(json.dumps({name: chain for name, chain in chains.items() if name in sys.modules}))
"""


def imported_on_import(module: str, watched: tuple[str, ...]) -> dict[str, list[str]]:
    """Which of `watched` importing `module` alone loads, each with the chain of modules that pulled it in."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, module, *watched],
        cwd=PACKAGE_DIR.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"`import {module}` failed in a fresh interpreter:\n{result.stderr.strip()}", pytrace=False)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("module", "forbidden"), NOT_ON_IMPORT, ids=[module for module, _ in NOT_ON_IMPORT])
def test_import_stays_cheap(module: str, forbidden: tuple[str, ...]) -> None:
    """`gradcheck --help` and shell completion start without numpy or rich, and the registries (losses, input
    formats, output formats) are bare tables of names that load nothing heavy until a choice is made."""
    loaded = imported_on_import(module, forbidden)
    problems = [f"{name}, via {' -> '.join(chain) or module}" for name, chain in sorted(loaded.items())]
    report(problems, f"`import {module}` alone imports {', '.join(sorted(loaded))} (import it where it is used):")
