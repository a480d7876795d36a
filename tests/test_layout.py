"""The package's rooms: arithmetic (ops) never imports modules (nn) or the application (run);
modules never import the application."""

import ast
from pathlib import Path

import pytest

import mpno

PACKAGE = Path(mpno.__file__).parent
FORBIDDEN = {"ops": ("nn", "run"), "nn": ("run",), "bounds": ("run",), "data": ("nn", "run")}


def imported_rooms(path: Path) -> set[str]:
    """The subpackages of mpno that ``path`` imports (absolute or relative imports)."""
    module = path.relative_to(PACKAGE.parent).with_suffix("").parts  # ("mpno", "ops", "transforms")
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module[: len(module) - node.level]
                target = (*base, *(node.module.split(".") if node.module else ()))
                names = [(*target, alias.name) for alias in node.names] if len(target) < 2 else [target]
            else:
                names = [tuple(node.module.split("."))]
        elif isinstance(node, ast.Import):
            names = [tuple(alias.name.split(".")) for alias in node.names]
        else:
            continue
        rooms |= {name[1] for name in names if len(name) > 1 and name[0] == "mpno"}
    return rooms


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_imports_flow_one_way(room):
    for path in sorted((PACKAGE / room).glob("*.py")):
        wrong = imported_rooms(path) & set(FORBIDDEN[room])
        assert not wrong, f"{path.relative_to(PACKAGE)} imports mpno.{', mpno.'.join(sorted(wrong))}"


def test_the_checker_sees_relative_imports():
    assert imported_rooms(PACKAGE / "nn" / "spectral.py") >= {"ops", "checks", "precision"}
    assert imported_rooms(PACKAGE / "run" / "domains" / "grid.py") >= {"nn", "data", "bounds"}


def module_imports(path: Path) -> set[str]:
    """The mpno modules ``path`` imports when it is imported (imports inside functions apart), as dotted names;
    ``from package import name`` counts the submodule ``package.name`` where there is one, else the package."""
    module = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = module[:-1]
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
               for p in PACKAGE.rglob("*.py")}
    found = set()
    for node in ast.parse(path.read_text()).body:  # the module's top level only
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            target = ".".join((*base, *(node.module.split(".") if node.module else ())))
            found |= {f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                      for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name in modules and name != ".".join(module).removesuffix(".__init__")}


def test_no_import_cycles():
    graph = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"):
             module_imports(p) for p in PACKAGE.rglob("*.py")}
    assert "mpno.run.domains.grid" in graph["mpno.run.domains"] and "mpno.precision" in graph["mpno.run.config"]
    done, path = set(), []

    def visit(name):
        if name in path:
            cycle = path[path.index(name):] + [name]
            raise AssertionError("import cycle: " + " → ".join(cycle))
        if name in done:
            return
        path.append(name)
        for imported in sorted(graph.get(name, ())):
            visit(imported)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


#: Files of the application over 350 lines, each doing one job.
LONG_BUT_ONE_JOB = {"cli.py": "the command line: its parsers and the functions behind each command",
                    "plots.py": "the figures mpno draws, each a function of data it is given"}


def test_the_application_s_files_are_short_or_do_one_job():
    long = {path.name: len(path.read_text().splitlines()) for path in (PACKAGE / "run").rglob("*.py")
            if len(path.read_text().splitlines()) > 350}
    assert set(long) <= set(LONG_BUT_ONE_JOB), long
