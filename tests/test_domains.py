"""The domain adapters: the run asks them, never the operator's name; each says in one line what it cannot do."""

import ast
from pathlib import Path

import pytest

import mpno
from mpno.nn import registry
from mpno.run import domains
from mpno.run.config import RunConfig

RUN = Path(mpno.__file__).parent / "run"
#: Where knowledge of operators and domains by name belongs: the adapters (the registry lives in mpno.nn).
ADAPTERS = {"domains"}
#: Types whose isinstance test would be a branch on the kind of model or data.
KIND_TYPES = {cls.__name__ for cls in registry.models().values()} | {
    "PointCloudDataset", "PointCloudBatches", "PointClouds", "OperatorDataset", "FieldOperator"}


def branches_on_kind(path: Path) -> list[str]:
    """The lines of ``path`` that compare with an operator's or a domain's name, or test for an operator's or a
    data set's type."""
    names = set(registry.models()) | set(domains.DOMAINS)

    def named(node) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(named(e) for e in node.elts)

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare) and any(named(n) for n in (node.left, *node.comparators)):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
            types = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
            if any(getattr(t, "id", getattr(t, "attr", None)) in KIND_TYPES for t in types):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_run_asks_the_adapters_and_never_branches_on_the_operator():
    found = [line for path in sorted(RUN.rglob("*.py")) if path.parent.name not in ADAPTERS
             for line in branches_on_kind(path)]
    assert not found, "\n".join(found)


def test_the_checker_sees_a_branch(tmp_path):
    path = tmp_path / "branchy.py"
    path.write_text('if config.model == "gino":\n    pass\nif kind in ("sfno", "x"):\n    pass\n'
                    'if isinstance(model.operator, SFNO):\n    pass\nif domain.name != "points":\n    pass\n'
                    'if config.optimizer == "adamw":\n    pass\n')
    assert [line.split(":")[1] for line in branches_on_kind(path)] == ["1", "3", "5", "7"]


def test_an_operator_of_an_unregistered_domain_is_refused_by_name(monkeypatch):
    class Lost:
        domain = "torus"

    monkeypatch.setattr(domains, "operator_class", lambda model: Lost)
    with pytest.raises(ValueError, match="maps data of the domain 'torus', which no domain module registers; known "
                                         "domains: grid, sphere, points"):
        domains.of("lost")


def test_every_operator_has_an_adapter_and_every_adapter_a_name():
    assert set(domains.DOMAINS) == {"grid", "sphere", "points"}
    for kind, cls in registry.models().items():
        assert domains.of(kind) is domains.DOMAINS[cls.domain]


@pytest.mark.parametrize("model, option, message", [
    ("gino", {"precision": "auto"}, "precision='auto' audits Fourier coefficients of grid data on the cube, and a "
                                    "point cloud has none; give --model gino a precision mode"),
    ("sfno", {"precision": "auto"}, "precision='auto' audits Fourier coefficients of grid data on the cube (mpno "
                                    "bounds audits the sphere's harmonic coefficients); give --model sfno a "
                                    "precision mode"),
    ("gino", {"eval_losses": ["h1"]}, "eval_losses=['h1'] does not apply to model='gino'"),
])
def test_an_adapter_says_in_one_line_what_it_cannot_do(model, option, message):
    with pytest.raises(ValueError) as refused:
        RunConfig(model=model, **option).validate()
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_options_reach_the_operators_that_take_them():
    config = RunConfig(model="gino", domain_padding=0.25, grid="equiangular", hidden_channels=6).validate()
    assert domains.of("gino").operator_options(config) == {
        "hidden_channels": 6, "n_layers": 4, "channel_mlp": True, "rank": 0.05, "latent_grid": 16,
        "chunk_size": 65536, "domain_padding": 0.25}  # no grid; radius and kernel None: the operator's defaults
    config = RunConfig(model="sfno", domain_padding=0.25, grid="legendre-gauss").validate()
    assert domains.of("sfno").operator_options(config)["grid"] == "legendre-gauss"
    assert "domain_padding" not in domains.of("sfno").operator_options(config)


TOY_DOMAIN = '''
"""A toy domain: fields on a ring, (N, C, n), with an option of its own and no audit."""
from mpno.nn.models import FNO
from mpno.run.domains.grid import GridDomain
from mpno.run.options import option


class RingDomain(GridDomain):
    name = "ring"
    data = "fields on a ring"
    capabilities = frozenset({"plots"})
    lacks = {"audit": "no audit is written for rings", "auto_precision": "no audit is written for rings"}
    declared_options = {"ring_label": option("unnamed", "str", "the ring's name", group="data")}


class RingFNO(FNO, kind="ring-fno", domain="ring"):
    """An FNO on the ring's domain."""
'''

TOY_RUN = '''
import json, sys
from pathlib import Path
import mpno.run.domains as domains
import toy_ring
domains.register(toy_ring.RingDomain())  # the one registration line
from mpno.run import cli

data, out = sys.argv[1], Path(sys.argv[2])
assert cli.main(["train", "--model", "ring-fno", "--data-train", data, "--ring-label", "the toy ring", "--epochs", "1",
                 "--spatial-dims", "1", "--n-modes", "4", "--hidden-channels", "4", "--n-layers", "1", "--out", str(out), "-q"]) == 0
print(json.dumps({"config": json.loads((out / "config.json").read_text()),
                  "plots": sorted(p.name for p in out.glob("samples_*.png")),
                  "bounds": cli.main(["bounds", data, "--checkpoint", str(out / "best.pt")]),
                  "auto": cli.main(["train", "--model", "ring-fno", "--data-train", data, "--precision", "auto",
                                    "--spatial-dims", "1", "--out", str(out / "auto")])}))
'''


def test_a_new_domain_is_its_own_module_and_one_registration_line(tmp_path):
    """A toy domain in its own module, registered with one line: its option is a flag and a recorded option, its
    operator trains and plots through it, and what it does not declare (audits) is refused from the declaration."""
    import json
    import subprocess
    import sys

    import torch

    (tmp_path / "toy_ring.py").write_text(TOY_DOMAIN)
    (tmp_path / "run_toy.py").write_text(TOY_RUN)
    x = torch.randn(40, 1, 16)
    torch.save({"x": x, "y": torch.roll(x, 3, -1)}, tmp_path / "ring.pt")
    done = subprocess.run([sys.executable, "run_toy.py", str(tmp_path / "ring.pt"), str(tmp_path / "run")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["config"]["ring_label"] == "the toy ring" and result["config"]["model"] == "ring-fno"
    assert result["plots"] == ["samples_ring.png"]  # of the test set held out of ring.pt
    assert result["bounds"] == 2 and "mpno bounds does not apply to fields on a ring: no audit is written for " \
        "rings" in done.stderr
    assert result["auto"] == 2 and "precision='auto' no audit is written for rings" in done.stderr
