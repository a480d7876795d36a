"""Train an mpno FNO in your own PyTorch loop, in mixed precision (docs/own_loop.md).

    python examples/own_loop.py

Generates a small Darcy flow data set, trains for a few epochs in ``mixed``
precision (float16, with loss scaling) and then ``full``, shows what
``torch.autocast`` does to an mpno model, saves and restores the model, and loads
a checkpoint of ``mpno.run.experiment.train`` (what ``mpno train`` writes) with
``mpno.load_model``. Prints the test relative L2 error before and after training.
About 10 s on a CPU.
"""

import tempfile
from pathlib import Path

import torch

import mpno
from mpno.data import OperatorDataset, generate
from mpno.nn.losses import LpLoss
from mpno.precision import inside_autocast
from mpno.run.config import RunConfig
from mpno.run.experiment import train

SCHEDULE = ["mixed"] * 6 + ["full"] * 2  # the policy of each epoch


def main(tmp: Path) -> None:
    torch.manual_seed(0)
    path = generate("darcy", tmp / "darcy.h5", n=160, resolution=32, seed=0, progress=False)[0]
    data = OperatorDataset(path)
    x, y = (torch.stack(fields) for fields in zip(*(data[i] for i in range(len(data)))))
    x_train, y_train, x_test, y_test = x[:128], y[:128], x[128:], y[128:]

    # The normalisers are fitted on the training split; the model maps raw inputs to raw outputs.
    model = mpno.NormalizedOperator(
        mpno.FNO(in_channels=1, out_channels=1, n_modes=(8, 8), hidden_channels=16, n_layers=3),
        mpno.UnitGaussianNormalizer.fit(x_train), mpno.UnitGaussianNormalizer.fit(y_train))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    scaler = torch.amp.GradScaler("cpu")  # "cuda" on a GPU
    loss_fn = LpLoss(2)  # relative L2, computed in float32 whatever the model's precision

    @torch.no_grad()
    def test_error() -> float:
        model.eval()
        return loss_fn(model(x_test), y_test).item()

    print(f"initial test relative L2 {test_error():.4f}")
    for epoch, precision in enumerate(SCHEDULE):
        policy = model.set_precision(precision)  # between steps, never inside one
        model.train()
        for batch in torch.randperm(len(x_train)).split(16):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_train[batch]), y_train[batch])
            if policy.uses_grad_scaler:  # float16 gradients underflow; bfloat16 and full need no scaling
                scaler.scale(loss).backward()
                scaler.step(optimizer)  # skips the step if the scaled gradients overflowed
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
        print(f"epoch {epoch + 1} {policy}: train {loss.item():.4f}, test {test_error():.4f}")
    print(f"final test relative L2 {test_error():.4f}")

    # Inside torch.autocast an mpno model keeps its own policy; a full model runs as amp.
    for precision in ("full", "mixed"):
        model.set_precision(precision)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            print(f"{precision} model inside autocast(bfloat16) runs as {inside_autocast(model.precision, 'cpu')}: "
                  f"test {test_error():.4f}")
    model.set_precision("full")

    # Save and restore: the architecture (spec) and the weights with the normalisers (state_dict).
    torch.save({"spec": model.spec(), "weights": model.state_dict()}, tmp / "own.pt")
    saved = torch.load(tmp / "own.pt", weights_only=True)
    restored = mpno.NormalizedOperator.from_spec(saved["spec"])
    restored.load_state_dict(saved["weights"])
    assert torch.equal(restored.eval()(x_test), model.eval()(x_test))

    # A checkpoint of mpno.run.experiment.train (or `mpno train`) loads with mpno.load_model.
    config = RunConfig(data_train=str(path), epochs=1, n_modes=[8], hidden_channels=8, n_layers=2,
                       precision="mixed", out=str(tmp / "run"), tensorboard=False)
    train(config, log=lambda message: None, progress=False)
    loaded = mpno.load_model(tmp / "run" / "best.pt")  # weights, normalisers and precision; eval mode
    print(f"loaded {loaded.precision} model from mpno.run.experiment.train: output {tuple(loaded(x_test).shape)}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="mpno_own_loop_") as tmp:
        main(Path(tmp))
