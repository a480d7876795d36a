"""The ``mpno`` command and run configurations: flags, config files, model choices."""

import argparse
import dataclasses
import json
from pathlib import Path

import h5py
import pytest
import torch

import mpno
from mpno.nn.factorized import TuckerWeight
from mpno.run import cli
from mpno.run.bench import BenchConfig
from mpno.run.config import RunConfig
from mpno.run.assembly import operator_for


def test_cli_train_and_evaluate_with_json(files, tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli.main(["train", "--data-train", str(files / "train.pt"), "--data-test", str(files / "test16.pt"),
                     "--data-test", str(files / "test32.pt"), "--modes", "4", "--width", "6", "--layers", "2",
                     "--epochs", "2", "--precision", "mixed", "--dtype", "bfloat16", "--device", "cpu",
                     "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["test"]) == {"test16.pt", "test32.pt"} and summary["epochs"] == 2
    assert summary["precision_history"][0]["precision"] == "mixed/bfloat16" and summary["seconds"] > 0
    used = "cuda" if torch.cuda.is_available() else "cpu"
    assert json.loads((out / "config.json").read_text())["device"] == used == summary["device"]  # not "auto"
    code = cli.main(["evaluate", str(out / "best.pt"), "--data", str(files / "test32.pt"), "--json"])
    assert code == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(results["test"]["test32.pt"]) == {"l2", "h1"}



def test_config_files_and_flags(files, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(f'data_train = "{files / "train.pt"}"\nmodes = [4]\nwidth = 6\nlayers = 1\nepochs = 1\n'
                      'precision = "full"\nbogus = 3\n')
    assert cli.main(["train", "--config", str(config), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "run.toml: unknown option 'bogus'" in err and "Traceback" not in err
    config.write_text(config.read_text().replace("bogus = 3\n", ""))
    yaml_config = tmp_path / "run.yaml"
    yaml_config.write_text("epochs: 1\nwidth: 6\n")
    assert RunConfig.from_file(yaml_config).hidden_channels == 6  # an alias of the old name
    assert cli.main(["train", "--config", str(config), "--epochs", "2", "--out", str(tmp_path / "b"),
                     "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["epochs"] == 2



@pytest.mark.parametrize("model, factorization, kind, weight", [
    ("fno", None, mpno.FNO, None), ("fno", "dense", mpno.FNO, None), ("tfno", None, mpno.TFNO, TuckerWeight),
    ("tfno", "dense", mpno.TFNO, None), ("fno", "tucker", mpno.FNO, TuckerWeight),
])
def test_factorization_names_build_the_same_weights_everywhere(model, factorization, kind, weight):
    config = RunConfig(model=model, factorization=factorization, n_modes=[4], hidden_channels=4, n_layers=1, rank=0.5)
    built = [operator_for(config, 1, 1, (4, 4)),
             BenchConfig(model, factorization, rank=0.5, hidden_channels=4, n_modes=(4, 4), n_layers=1).build()]
    for operator in built:
        assert type(operator) is kind
        factorized = operator.blocks[0].conv.factorized
        assert (factorized is None) if weight is None else isinstance(factorized, weight)
        assert operator.arguments["factorization"] == ("dense" if weight is None else "tucker")


def test_tfno_with_dense_factorization_from_the_command_line(files, tmp_path, capsys):
    out = tmp_path / "dense"
    assert cli.main(["train", "--data-train", str(files / "train.pt"), "--model", "tfno", "--factorization",
                     "dense", "--modes", "4", "--width", "4", "--layers", "1", "--epochs", "1", "--device", "cpu",
                     "--out", str(out)]) == 0
    capsys.readouterr()
    model = mpno.load_model(out / "checkpoint.pt")
    conv = model.operator.blocks[0].conv
    assert conv.factorized is None and conv.weight.shape == (4, 4, 4, 3, 2)
    assert cli.main(["train", "--data-train", str(files / "train.pt"), "--factorization", "svd",
                     "--out", str(tmp_path / "bad")]) == 2
    assert "factorization='svd' is not supported" in capsys.readouterr().err


def test_predict_writes_predictions_with_and_without_targets(files, tmp_path, capsys):
    import h5py

    from mpno.run.experiment import train
    from reference import quiet, tiny_config

    train(tiny_config(files, tmp_path / "run", epochs=1), log=quiet)
    best = str(tmp_path / "run" / "best.pt")
    assert cli.main(["predict", best, str(files / "test32.pt"), "--out", str(tmp_path / "p.h5"), "--json",
                     "-q"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    data = torch.load(files / "test32.pt")
    model = mpno.load_model(best)
    with h5py.File(tmp_path / "p.h5") as f, torch.no_grad():
        assert torch.allclose(torch.from_numpy(f["prediction"][:]), model(data["x"]), atol=1e-6)
        assert torch.allclose(torch.from_numpy(f["error"][:]), model(data["x"]) - data["y"], atol=1e-6)
        assert report["relative_l2"] == pytest.approx(float(f["relative_l2"][:].mean()), rel=1e-6)
    assert report["samples"] == 8 and report["grid"] == [32, 32] and report["samples_per_second"] > 0
    torch.save({"x": data["x"][:3]}, tmp_path / "inputs.pt")
    assert cli.main(["predict", best, str(tmp_path / "inputs.pt"), "--out", str(tmp_path / "q.h5"),
                     "--precision", "full", "-q"]) == 0
    assert "3 predictions at 32×32 in full" in capsys.readouterr().out
    with h5py.File(tmp_path / "q.h5") as f:
        assert set(f) == {"prediction"} and f.attrs["precision"] == "full"
    assert cli.main(["predict", best, str(tmp_path / "inputs.pt"), "--out", str(tmp_path / "q.txt")]) == 2
    assert "give a .h5 path" in capsys.readouterr().err
    assert cli.main(["predict", best, str(tmp_path / "inputs.pt"), "--out", str(tmp_path / "b.h5"),
                     "--precision", "mixed", "--dtype", "bfloat16", "-q"]) == 0
    assert "in mixed/bfloat16" in capsys.readouterr().out
    assert cli.main(["predict", best, str(tmp_path / "inputs.pt"), "--out", str(tmp_path / "c.h5"),
                     "--dtype", "bfloat16"]) == 2
    assert "give both" in capsys.readouterr().err


def other_value(spec):
    """A command-line value for ``spec`` that differs from its default, and what it must parse to."""
    meta, default = spec.metadata, spec.default_factory() if spec.default is dataclasses.MISSING else spec.default
    kind = meta["kind"]
    if kind == "bool":
        return [], not default
    if meta["choices"]:
        taken = default if isinstance(default, list) else [default]
        choice = next(c for c in meta["choices"] if c not in taken)
        return [choice], [choice] if kind.endswith("_list") else choice
    if kind in ("int", "number", "int_list"):
        value = (default[0] if isinstance(default, list) else default or 0) + 1
        return [str(value)], [value] if kind == "int_list" else value
    if kind == "float":
        return ["0.5"], 0.5
    return ["other"], ["other"] if kind == "str_list" else "other"


def test_every_option_is_a_flag_that_parses_to_its_field():
    parser = cli.build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    options = {option: action for action in train._actions for option in action.option_strings}
    for spec in dataclasses.fields(RunConfig):
        flag = "--" + spec.name.replace("_", "-")
        words, expected = other_value(spec)
        if spec.metadata["kind"] == "bool":
            flag = flag if expected else "--no-" + flag[2:]
        config = RunConfig.from_dict(cli._given_options(parser.parse_args(["train", flag, *words])))
        assert getattr(config, spec.name) == expected, flag
        default = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default
        text = options["--" + spec.name.replace("_", "-")].help
        assert text.count("default") <= 1, text  # the default is said once, by the help or after it
        if default not in (None, []) and "default" not in spec.metadata["help"]:
            shown = " ".join(map(str, default)) if isinstance(default, list) else default
            assert text.endswith(f"(default: {shown})"), text
    for alias, field in (("--modes", "n_modes"), ("--width", "hidden_channels"), ("--layers", "n_layers")):
        assert options[alias].dest == field


def test_print_config_records_the_default_example_s_files_and_the_device(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MPNO_CACHE", str(tmp_path / "cache"))
    assert cli.main(["train", "--print-config"]) == 0
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    config = RunConfig.from_file(printed)
    cache = tmp_path / "cache"
    assert config.data_train == str(cache / "darcy_train_32.h5")
    assert config.data_test == [str(cache / "darcy_test_32.h5"), str(cache / "darcy_test.h5")]
    assert config.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert not cache.exists()  # printing generates nothing


def test_ranks_as_ints_or_fractions_and_print_config(tmp_path, capsys):
    ranks = []
    for rank, expected in (("8", 8), ("0.05", 0.05)):
        assert cli.main(["train", "--model", "tfno", "--factorization", "cp", "--rank", rank, "--width", "6",
                         "--n-modes", "4", "--print-config"]) == 0
        config = tmp_path / "printed.yaml"
        config.write_text(capsys.readouterr().out)
        loaded = RunConfig.from_file(config)
        assert loaded.rank == expected and type(loaded.rank) is type(expected) and loaded.hidden_channels == 6
        built = operator_for(loaded, 1, 1, (4, 4)).blocks[0].conv.factorized
        direct = mpno.TFNO(1, 1, (4, 4), hidden_channels=6, factorization="cp", rank=expected).blocks[0].conv.factorized
        assert built.ranks == direct.ranks
        ranks.append(built.ranks)
    assert ranks[0] == (8,) and ranks[1] != ranks[0]  # the int is the rank; the fraction gives another


def test_train_evaluate_and_load_an_sfno_and_a_gino(tmp_path, capsys):
    from mpno.data import generate

    x = torch.randn(12, 3, 16, 32)
    torch.save({"x": x, "y": x.roll(3, dims=-1) * torch.tensor([3000.0, 100.0, 1e-3])[:, None, None]},
               tmp_path / "s.pt")
    generate("potential-flow", tmp_path / "p.h5", n=12, points=64, progress=False)
    runs = {"sfno": ["--data-train", str(tmp_path / "s.pt"), "--n-modes", "8"],
            "gino": ["--data-train", str(tmp_path / "p.h5"), "--n-modes", "4", "--latent-grid", "6",
                     "--radius", "0.5"]}
    for model, args in runs.items():
        out = tmp_path / model
        assert cli.main(["train", "--model", model, *args, "--hidden-channels", "4", "--n-layers", "1",
                         "--epochs", "2", "--batch-size", "4", "--device", "cpu", "--out", str(out), "-q",
                         "--json"]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        (name, errors), = summary["test"].items()
        assert set(errors) == {"l2"} and 0 < errors["l2"] < 2
        assert type(mpno.load_model(out / "best.pt").operator).__name__ == model.upper()
        assert len(list(out.glob("samples_*.png"))) == 1  # a map (sfno), a 3D scatter (gino): tests/test_reporting.py
        data = str(tmp_path / ("s.pt" if model == "sfno" else "p.h5"))
        assert cli.main(["evaluate", str(out / "best.pt"), "--data-test", data, "--json"]) == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert set(report["test"][Path(data).name]) == {"l2"}
        predictions = tmp_path / f"{model}.h5"  # predict reports evaluate's l2: one definition per model
        assert cli.main(["predict", str(out / "best.pt"), data, "--out", str(predictions), "-q", "--json"]) == 0
        predicted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert predicted["relative_l2"] == pytest.approx(report["test"][Path(data).name]["l2"], rel=1e-5)
        assert predicted["samples"] == 12
        with h5py.File(predictions) as f:
            shape = (12, 3, 16, 32) if model == "sfno" else (12, 64, 1)
            assert f["prediction"].shape == f["error"].shape == shape and f["relative_l2"].shape == (12,)
            if model == "gino":
                assert list(f["sizes"][:]) == [64] * 12 and f["points"].shape == (12, 64, 3)
        assert cli.main(["bounds", data, "--checkpoint", str(out / "best.pt")]) == 2  # what the adapters say, one line
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.endswith(
            "mpno bounds does not apply to point clouds: it audits the Fourier or spherical harmonic coefficients of "
            "fields on a grid or the sphere, and a point cloud has none" if model == "gino" else
            "nests only with odd nlat and even nlon, coarsened still resolving lmax=8, mmax=8; give fields generated "
            "on each grid")
    assert cli.main(["train", "--model", "sfno", *runs["sfno"], "--loss", "h1", "--out", str(tmp_path / "r")]) == 2
    assert "loss='h1' does not apply to model='sfno'" in capsys.readouterr().err


def test_inference_keeps_the_trained_stabilizer_unless_one_is_named(files, tmp_path, capsys):
    from mpno.run.experiment import train
    from reference import quiet, tiny_config

    train(tiny_config(files, tmp_path / "run", epochs=1, precision="mixed"), log=quiet)  # no stabilizer
    best, data = str(tmp_path / "run" / "best.pt"), str(files / "test32.pt")
    errors = {}
    for precision in ("half", "half/none", "half/tanh"):
        assert cli.main(["predict", best, data, "--out", str(tmp_path / f"{precision.replace('/', '_')}.h5"),
                         "--precision", precision, "-q", "--json"]) == 0
        captured = capsys.readouterr()
        report = json.loads(captured.out.strip().splitlines()[-1])
        errors[precision] = report["relative_l2"]
        assert report["precision"] == ("half/float16/tanh" if precision == "half/tanh" else
                                       "half/float16/no-stabilizer")
        warned = "applies the tanh stabilizer, but the model was trained with no stabilizer" in captured.err
        assert warned == (precision == "half/tanh"), captured.err
        assert cli.main(["evaluate", best, "--data", data, "--precision", precision, "--json"]) == 0
        evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert evaluated["test"]["test32.pt"]["l2"] == pytest.approx(errors[precision], rel=1e-5)
    assert errors["half"] == errors["half/none"] != errors["half/tanh"]  # the same function; tanh changes it


def test_a_flag_has_one_name_and_one_meaning_in_every_command():
    """The same spelling is the same option (destination and name) wherever it appears; a renamed flag keeps
    its old spelling as an alias (cli.RENAMED), in that command only."""
    commands = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    meanings = {}
    for command, parser in commands.items():
        for action in parser._actions:
            names = [o for o in action.option_strings if o.startswith("--")]
            for spelling in names:
                if cli.RENAMED.get(command, {}).get(names[0]) == spelling:
                    continue  # an old spelling, kept as an alias
                meanings.setdefault(spelling, set()).add((action.dest, names[0]))
    assert {spelling: meaning for spelling, meaning in meanings.items() if len(meaning) > 1} == {}
    assert meanings["--batch-size"] == {("batch_size", "--batch-size")}
    assert meanings["--n-modes"] == {("n_modes", "--n-modes")} and meanings["--resolution"] == {
        ("resolution", "--resolution")}
    args = cli.build_parser().parse_args(["bench", "--grid", "16", "--batch", "2"])  # the old spellings still work
    assert (args.resolution, args.batch_size) == ([16], 2)
    assert cli.build_parser().parse_args(["bounds", "d.h5", "--model", "best.pt"]).checkpoint == "best.pt"


def test_generate_builds_its_flags_from_the_generators(tmp_path, capsys):
    from mpno.data.generate import GENERATORS

    parser = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    offered = {a.dest for a in parser["generate"]._actions}
    assert {name for generator in GENERATORS.values() for name in generator.flags} <= offered
    assert cli.main(["generate", "darcy", "--resolution", "16", "--n", "1", "--points", "8",
                     "--out", str(tmp_path / "d.h5")]) == 2
    assert "--points does not apply to darcy (its flags: none; others with --set KEY=VALUE)" in capsys.readouterr().err
    assert cli.main(["generate", "burgers", "--resolution", "16", "--n", "1", "--viscosity", "0.5", "--time", "0.01",
                     "--out", str(tmp_path / "b.h5")]) == 0
    assert json.loads(h5py.File(tmp_path / "b.h5").attrs["params"])["viscosity"] == 0.5
    assert cli.main(["generate", "navier-stokes", "--resolution", "8", "--n", "1", "--time", "0.01",
                     "--set", "forced=false", "--out", str(tmp_path / "ns.h5")]) == 0
    assert json.loads(h5py.File(tmp_path / "ns.h5").attrs["params"])["forced"] is False  # not the text "false"
    assert cli.main(["generate", "navier-stokes", "--resolution", "8", "--n", "1", "--set", "forced=no",
                     "--out", str(tmp_path / "ns2.h5")]) == 2
    assert "forced='no': expected true or false" in capsys.readouterr().err
