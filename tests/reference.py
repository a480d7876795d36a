"""Test helpers: float64 references and tolerances derived from the unit roundoff.

Tolerance model (docs/precision.md has the derivation): a computation that
rounds to a dtype with unit roundoff ``u`` at ``k`` stages makes, at each stage,
a relative error of at most ``u``. The worst case adds up to ``k·u``; round-to-
nearest errors are unbiased and nearly independent, so over thousands of
elements the normwise error concentrates near ``u·sqrt(k/3)``. The tests allow
``u·sqrt(k)`` (√3 above that estimate, a third of the worst case): a stage that
ran in a coarser dtype, or at a point it should not, exceeds it.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

from mpno.precision import UNIT_ROUNDOFF, Precision
from mpno.run.config import RunConfig


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    value, reference = value.detach().double(), reference.detach().double()
    return ((value - reference).norm() / reference.norm()).item()


def tolerance(dtype: torch.dtype, stages: int) -> float:
    """Allowed normwise relative error after ``stages`` roundings to ``dtype``."""
    return UNIT_ROUNDOFF[dtype] * math.sqrt(stages)


def rounding_only(mode: str, dtype: str) -> Precision:
    """The policy ``mode``/``dtype`` without a stabilizer: against float64, only rounding differs."""
    return Precision(mode, dtype, stabilizer=None)


def forward_stages(ndim: int) -> int:
    """Half forward transform: the input, then per dimension twiddles, partial sums, scaling."""
    return 1 + 3 * ndim


def inverse_stages(ndim: int) -> int:
    """Half inverse transform: per dimension twiddles and partial sums."""
    return 2 * ndim


def spectral_conv_stages(mode: str, ndim: int) -> int:
    """SpectralConv: forward (half, or fp32 then one rounding), weights, contraction, inverse, bias."""
    forward = forward_stages(ndim) if mode == "half" else 1
    return forward + 2 + inverse_stages(ndim) + 1


def bandlimited(batch: int, channels: int, grid, kmax: int, seed: int = 0) -> torch.Tensor:
    """A random real float64 field on ``grid`` with frequencies |k_i| <= kmax (all grid sizes > 2·kmax)."""
    gen = torch.Generator().manual_seed(seed)
    coords = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) / n for n in grid], indexing="ij")
    field = torch.zeros(batch, channels, *grid, dtype=torch.float64)
    for freq in torch.cartesian_prod(*[torch.arange(-kmax, kmax + 1)] * len(grid)).reshape(-1, len(grid)):
        phase = sum(int(k) * c for k, c in zip(freq, coords))
        amp = torch.randn(batch, channels, *[1] * len(grid), generator=gen, dtype=torch.float64)
        shift = 2 * math.pi * torch.rand(batch, channels, *[1] * len(grid), generator=gen, dtype=torch.float64)
        field += amp / (1 + float(freq.pow(2).sum())) * torch.cos(2 * math.pi * phase + shift)
    return field


def saved_dtypes(fn) -> set[torch.dtype]:
    """dtypes of the floating-point tensors autograd saves for backward while running ``fn()``."""
    seen: set[torch.dtype] = set()

    def pack(t):
        if t.is_floating_point():
            seen.add(t.dtype)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return seen




#: The device of tests marked ``gpu`` (skipped without CUDA).
CUDA = torch.device("cuda")


def smooth_pairs(n, resolution, seed):
    """x: band-limited fields; y: x smoothed by (1 + |k|²)^-1 plus x² (an operator to learn)."""
    x = bandlimited(n, 1, (resolution, resolution), kmax=3, seed=seed).float()
    k = torch.fft.fftfreq(resolution, 1 / resolution)
    kernel = 1 / (1 + k[:, None] ** 2 + torch.fft.rfftfreq(resolution, 1 / resolution)[None, :] ** 2)
    y = torch.fft.irfft2(torch.fft.rfft2(x) * kernel, s=(resolution, resolution)) + 0.1 * x**2
    return x, y


def tiny_config(files, out, **overrides) -> RunConfig:
    values = dict(data_train=str(files / "train.pt"), data_test=[str(files / "test16.pt"), str(files / "test32.pt")],
                  n_modes=[4], hidden_channels=6, n_layers=2, epochs=4, batch_size=8, lr=5e-3, device="cpu", out=str(out),
                  tensorboard=False)
    values.update(overrides)
    return RunConfig(**values)


def quiet(message):
    pass


def json_of(capsys, *argv) -> dict:
    """``mpno *argv --json`` run here: it must exit 0; its JSON line (the last of stdout)."""
    from mpno.run import cli

    assert cli.main([*map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def kept_index(grid, n_modes) -> list[torch.Tensor]:
    """Per dimension, the grid indices of the kept frequencies (mpno's / neuraloperator's convention)."""
    index = [torch.arange(-(m // 2), m - m // 2) % n for n, m in zip(grid[:-1], n_modes[:-1])]
    return index + [torch.arange(n_modes[-1] // 2 + 1)]


def hermitian_field(coeffs: torch.Tensor, grid) -> torch.Tensor:
    """The real field of kept complex coefficients (batch, channels, *kept), written from the definition.

    The coefficients are placed on the full grid (``G``); the spectrum is the Hermitian
    projection ``F = w (G + conj(G(-k)))`` with ``w = 1/2`` on the last dimension's 0 and
    Nyquist planes and 1 elsewhere; the field is the complex inverse DFT of ``F``
    (an unnormalised sum), whose imaginary part must vanish.
    """
    ndim = len(grid)
    kept = coeffs.shape[2:]
    modes = (*kept[:-1], 2 * (kept[-1] - 1))
    full = torch.zeros(*coeffs.shape[:2], *grid, dtype=torch.complex128)
    index = torch.meshgrid(*kept_index(grid, modes), indexing="ij")
    full[(slice(None), slice(None), *index)] = coeffs.to(torch.complex128)
    dims = tuple(range(2, 2 + ndim))
    mirrored = torch.roll(torch.flip(full, dims), shifts=(1,) * ndim, dims=dims).conj()
    last = torch.arange(grid[-1])
    weight = torch.where((last == 0) | (2 * last == grid[-1]), 0.5, 1.0).double()
    spectrum = (full + mirrored) * weight
    field = torch.fft.ifftn(spectrum, dim=dims, norm="forward")
    assert field.imag.abs().max() < 1e-10 * max(1.0, field.real.abs().max().item())
    return field.real


def last_layer_amplification(reference: torch.nn.Module, x64: torch.Tensor) -> float:
    """κ = ‖ |W| |h| + |b| ‖ / ‖y‖ for the final pointwise layer: how much its sum cancels.

    Rounding errors are relative to the terms summed, not to the (possibly much
    smaller) result, so the output's relative error is amplified by κ.
    """
    captured = {}
    layer = reference.projection.fc2
    handle = layer.register_forward_hook(lambda mod, inp, out: captured.update(h=inp[0], y=out))
    reference(x64)
    handle.remove()
    terms = layer.weight.abs() @ captured["h"].abs().flatten(2) + layer.bias.abs()[:, None]
    return (terms.norm() / captured["y"].norm()).item()


def snapshot(root: Path) -> dict:
    """Every file under ``root`` and its content hash, but the runs the cases create (under ``out/``) and
    run locks (which record the pid of the last process that held them)."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and "out" not in p.relative_to(root).parts and p.name != ".lock"}


def the_error(err: str) -> str:
    """The one line an ``mpno`` command printed for its error (stderr may hold log lines before it):
    exactly one, and the last line."""
    lines = [line for line in err.splitlines() if line.startswith("mpno ")]
    assert len(lines) == 1 and err.rstrip().splitlines()[-1] == lines[0], err
    return lines[0]


#: ``mpno train`` flags of a tiny, quiet CPU model.
TINY = ["--n-modes", "4", "--hidden-channels", "4", "--n-layers", "1", "--device", "cpu", "-q"]


def training_process(files: Path, out: Path) -> subprocess.Popen:
    """A long ``mpno train`` on ``files/train.pt`` in its own process, once its first checkpoint is saved."""
    command = [sys.executable, "-m", "mpno", "train", "--data-train", str(files / "train.pt"), *TINY,
               "--epochs", "400", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the run saved no checkpoint: {process.communicate()[1]}")
        time.sleep(0.1)
    return process


def interrupted(config: RunConfig, epochs_done: int, monkeypatch) -> None:
    """Train ``config`` and stop it with Ctrl-C once ``epochs_done`` epochs are saved, as a user would."""
    import pytest

    from mpno.run.experiment import train
    from mpno.run.trainer import Trainer

    original = Trainer.train_epoch

    def killed(self, epoch):
        if epoch == epochs_done:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        train(config, log=quiet)
    monkeypatch.setattr(Trainer, "train_epoch", original)
