"""A run is resolved once: a frozen configuration, written only by the parsers and the resolver, recorded whole
in config.json, with the data files opened once."""

import ast
import dataclasses
import json
from pathlib import Path

import pytest

import mpno
from mpno.precision import Precision, PrecisionSchedule
from mpno.run import domains
from mpno.run.config import RunConfig
from mpno.run.experiment import train
from mpno.run.resolve import open_run
from reference import quiet, tiny_config

PACKAGE = Path(mpno.__file__).parent
#: The parsers (options from flags and files) and the resolver: the only modules that make a changed configuration.
WRITERS = {"run/config.py", "run/cli.py", "run/resolve.py"}


def config_writes(path: Path) -> list[str]:
    """The lines of ``path`` that assign to an attribute of something named like a configuration, or
    ``setattr`` on one."""
    def configish(node) -> bool:
        return isinstance(node, ast.Name) and "config" in node.id.lower()

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Assign):
            targets = [t for target in node.targets for t in (target.elts if isinstance(target, ast.Tuple)
                                                              else [target])]
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        if any(isinstance(t, ast.Attribute) and configish(t.value) for t in targets):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr" and node.args \
                and configish(node.args[0]):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_nothing_downstream_writes_to_a_configuration():
    found = [line for path in sorted(PACKAGE.rglob("*.py"))
             if str(path.relative_to(PACKAGE)) not in WRITERS for line in config_writes(path)]
    assert not found, "\n".join(found)


def test_the_checker_sees_writes(tmp_path):
    path = tmp_path / "writes.py"
    path.write_text("config.batch_size = 4\nrun_config.device, x = 'cpu', 1\nsetattr(config, 'grid', 'x')\n"
                    "config.epochs += 1\nmodel.weight = 2\n")
    assert sorted(line.split(":")[1] for line in config_writes(path)) == ["1", "2", "3", "4"]


def test_a_configuration_is_frozen():
    config = RunConfig().validate()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_size = 8


def test_the_domains_options_are_run_options():
    names = {f.name for f in dataclasses.fields(RunConfig)}
    for domain in domains.DOMAINS.values():
        assert set(domain.declared_options) <= names, domain.name
    assert RunConfig(model="gino", latent_grid=8).validate().latent_grid == 8
    with pytest.raises(ValueError, match="latent_grid=1 is out of range"):
        RunConfig(model="gino", latent_grid=1).validate()


def test_config_json_records_what_ran_and_each_file_is_opened_once(files, tmp_path, monkeypatch):
    opened = []
    grid = domains.DOMAINS["grid"]
    real = type(grid).dataset
    monkeypatch.setattr(type(grid), "dataset", lambda self, path, config: opened.append(path) or real(self, path,
                                                                                                    config))
    config = dataclasses.replace(tiny_config(files, tmp_path / "run", epochs=1), batch_size=None, n_modes=None,
                                 device="auto")
    train(config, log=quiet)
    assert sorted(opened) == sorted([config.data_train, *config.data_test])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["device"] == "cpu" and saved["out"] == str(tmp_path / "run")
    assert saved["batch_size"] == 1 and saved["n_modes"] == [12]  # sized to the 24 training samples
    assert RunConfig.from_dict(saved).validate() == RunConfig.from_dict(saved)


def test_the_precision_is_parsed_once_into_a_schedule(files, tmp_path):
    run = open_run(tiny_config(files, tmp_path, precision="half:0.5,mixed/bfloat16:0.5").validate(), quiet)
    assert run.schedule == PrecisionSchedule(((0.5, Precision("half")), (0.5, Precision("mixed", "bfloat16"))))
    chosen = open_run(tiny_config(files, tmp_path, precision="auto").validate(), quiet,
                      choose_precision=lambda config, train: (Precision("mixed", "bfloat16"), "a test's choice"))
    assert chosen.schedule == PrecisionSchedule(((1.0, Precision("mixed", "bfloat16")),))
    assert (chosen.config.precision, chosen.config.dtype) == ("mixed/bfloat16", "bfloat16")
    assert chosen.notes[-1] == "precision=auto chose a test's choice"
