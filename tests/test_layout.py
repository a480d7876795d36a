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
    assert imported_rooms(PACKAGE / "run" / "domains.py") >= {"nn", "data", "bounds"}
