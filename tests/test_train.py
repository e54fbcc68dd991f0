"""The trainer on real MNIST (and real CIFAR pixels for augmentation)."""

import pytest
import torch

from cnnbench.checkpoints import load_checkpoint, save_checkpoint
from cnnbench.config import Augment, ModelConfig
from cnnbench.data import load_meta
from cnnbench.loader import apply_augment
from cnnbench.train import train


def mnist_cfg(**kw) -> ModelConfig:
    base = dict(arch="seed001_mnist", dataset="mnist", epochs=1, batch_size=64,
                optimizer={"lr": 0.003}, schedule={"name": "inverse_time", "decay": 0.319})
    return ModelConfig(**{**base, **kw})


def test_seed_net_learns_mnist_in_one_epoch(mnist_dir):
    """The learning check: one epoch on all 60,000 real images reaches 97%."""
    result = train(mnist_cfg(), mnist_dir, progress=False)
    row = result.curves[0]
    assert row["test_acc"] >= 0.97, row
    assert row["train_acc"] > 0.9 and row["lr"] == 0.003
    assert result.timings[0]["train_images_per_s"] > 0


def test_cpu_training_is_deterministic_from_the_seed(mnist_dir):
    cfg = mnist_cfg(epochs=2, train_limit=1500, augment={"crop_padding": 2, "cutout": 6})
    a = train(cfg, mnist_dir, progress=False)
    b = train(cfg, mnist_dir, progress=False)
    assert a.curves == b.curves
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    c = train(cfg.model_copy(update={"seed": 1}), mnist_dir, progress=False)
    assert c.curves != a.curves  # the seed matters
    assert a.curves[1]["lr"] == pytest.approx(0.003 / 1.319)


def test_plateau_lowers_the_lr_after_epochs_without_a_better_test_loss(mnist_dir, tmp_path):
    """The LR column follows the rule applied to the run's own test losses, and a resumed
    run keeps the plateau's state (a fresh one would start at the full LR again)."""
    from cnnbench.checkpoints import Resume

    cfg = mnist_cfg(epochs=4, train_limit=256, batch_size=128, optimizer={"lr": 0.05},
                    schedule={"name": "plateau", "gamma": 0.5, "step_size": 1})
    curves = train(cfg, mnist_dir, progress=False).curves
    expected, best, lr = [], float("inf"), 0.05
    for row in curves:
        expected.append(lr)
        if row["test_loss"] < best - 1e-4:
            best = row["test_loss"]
        else:
            lr *= 0.5
    assert [r["lr"] for r in curves] == pytest.approx(expected)
    assert expected[-1] < 0.05, "the run never met a plateau; the test says nothing"

    def interrupt_after_epoch_3(row, timing):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    resume = Resume(tmp_path / "state.pt")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, mnist_dir, progress=False, resume=resume, on_epoch=interrupt_after_epoch_3)
    assert train(cfg, mnist_dir, progress=False, resume=resume).curves == curves


def test_on_epoch_sees_every_epoch_and_train_limit_caps_rows(mnist_dir):
    seen = []
    train(mnist_cfg(epochs=3, train_limit=640, batch_size=128), mnist_dir,
          on_epoch=lambda row, timing: seen.append((row["epoch"], timing["train_images_per_s"])), progress=False)
    assert [e for e, _ in seen] == [0, 1, 2]


def test_checkpoint_round_trip_with_weights_only(mnist_dir, tmp_path):
    cfg = mnist_cfg(train_limit=500)
    result = train(cfg, mnist_dir, progress=False)
    path = tmp_path / "m.pt"
    save_checkpoint(path, result.model, cfg, load_meta(mnist_dir), run_id="abc")
    model, ckpt = load_checkpoint(path)  # torch.load(weights_only=True) inside
    assert ckpt["config"]["arch"] == "seed001_mnist" and ckpt["mlflow_run_id"] == "abc"
    x = torch.randn(3, 1, 28, 28)
    result.model.eval()
    assert torch.equal(model(x), result.model.cpu()(x))


def test_augmentation_on_real_cifar_pixels(datasets_dir):
    import numpy as np

    raw = np.load(datasets_dir / "cifar10-subset.npz")
    images = torch.from_numpy(raw["x_train"][:64]).permute(0, 3, 1, 2).contiguous()
    x = images  # augmentation works on the uint8 pixels, before normalisation
    gen = torch.Generator().manual_seed(0)

    flipped = apply_augment(x, Augment(flip=True), gen)
    same = [torch.equal(a, b) for a, b in zip(flipped, x)]
    mirrored = [torch.equal(a, b.flip(2)) for a, b in zip(flipped, x)]
    assert all(s or m for s, m in zip(same, mirrored)) and 10 < sum(mirrored) < 54

    cropped = apply_augment(x, Augment(crop_padding=4), gen)
    assert cropped.shape == x.shape and cropped.dtype == torch.uint8
    # every crop is a shifted window of the zero-padded image
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(8):
        assert any(torch.equal(cropped[i], padded[i, :, dy:dy + 32, dx:dx + 32])
                   for dy in range(9) for dx in range(9))

    cut = apply_augment(x, Augment(cutout=8), gen)
    zeroed = (cut == 0).all(dim=1).sum(dim=(1, 2))
    assert ((zeroed >= 16) & (zeroed <= 64)).all()  # an 8x8 square, clipped at the border


def test_keras_shift_moves_by_fractions_of_a_pixel_and_repeats_the_edges():
    # channel 0 rises 8 levels a column, channel 1 8 levels a row: away from the edges a
    # shift of t pixels changes every pixel of a channel by 8t (rounded)
    ramp = torch.arange(32, dtype=torch.uint8) * 8
    x = torch.stack([ramp.expand(32, 32), ramp[:, None].expand(32, 32)])
    x = x.expand(200, 2, 32, 32).contiguous()
    moved = apply_augment(x, Augment(shift=0.1), torch.Generator().manual_seed(0))
    assert moved.shape == x.shape and moved.dtype == torch.uint8

    change = (moved.float() - x.float())[:, :, 4:28, 4:28]  # no edge within 3.2 px
    per_image = change.flatten(2)
    assert (per_image.amax(2) - per_image.amin(2)).max() <= 1  # one shift per image and axis
    pixels = per_image.mean(2) / 8
    assert pixels.abs().max() <= 3.2 + 1 / 16  # 0.1 of 32 pixels, plus rounding
    assert (pixels > 2).any() and (pixels < -2).any()
    assert (pixels.frac().abs() > 0.1).float().mean() > 0.5  # not whole pixels

    grey = torch.full((16, 3, 32, 32), 200, dtype=torch.uint8)
    assert torch.equal(apply_augment(grey, Augment(shift=0.2), torch.Generator()), grey)
