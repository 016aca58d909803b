"""Colour jitter of the network's input (``--color-jitter``, training/data/photometric.py)."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from training.data.photometric import color_jitter
from training.run.loop import train_one_epoch


def test_each_image_gets_its_own_colours_within_range() -> None:
    torch.manual_seed(0)
    image = torch.rand(1, 3, 16, 16) * 0.6 + 0.2
    batch = image.repeat(6, 1, 1, 1)
    assert color_jitter(batch, 0.0) is batch
    out = color_jitter(batch, 0.3)
    assert out.shape == batch.shape and out.min() >= 0 and out.max() <= 1
    means = out.mean(dim=(1, 2, 3))
    assert len(set(means.round(decimals=4).tolist())) == 6  # six different draws
    ratio = means / batch.mean()
    assert ((ratio > 0.5) & (ratio < 1.6)).all()  # brightness x contrast x gains, bounded
    for k in range(6):  # colours change, the picture stays: strongly correlated with the input
        corr = torch.corrcoef(torch.stack([out[k].flatten(), batch[k].flatten()]))[0, 1]
        assert corr > 0.8 and not torch.allclose(out[k], batch[k])


def test_the_network_sees_jittered_images_and_the_loss_the_clean_ones() -> None:
    seen: dict[str, list[torch.Tensor]] = {"model": [], "loss": []}

    class Recorder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 1)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            seen["model"].append(x.detach().clone())
            return {"out": self.conv(x)}

    class Loss:
        def __call__(self, logits, batch):
            seen["loss"].append(batch.images.detach().clone())
            return logits["out"].mean()

        def after_step(self) -> None:
            pass

    images = torch.rand(4, 3, 8, 8)
    labels = torch.full((4, 8, 8), 255, dtype=torch.uint8)
    loader = DataLoader(TensorDataset(images, labels), batch_size=2)
    model = Recorder()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    torch.manual_seed(0)
    train_one_epoch(model, loader, Loss(), optimizer, scheduler, scaler, torch.device("cpu"),
                    "t", False, None, jitter=0.3)
    assert torch.equal(torch.cat(seen["loss"]), images)
    assert not torch.allclose(torch.cat(seen["model"]), images)
