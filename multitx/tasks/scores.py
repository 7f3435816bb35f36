"""What a classifier got right on a split: loss, top-1, top-5, accuracy per class, and the confusion matrix.

    scores = classify(model, images, labels, prepare, batch_size)   # images (N, C, H, W) uint8
    scores.metrics(prefix="val_")   {"val_loss": ..., "val_acc": ..., "val_top5": ...}
    scores.confusion                (classes, classes) int64: row = true class, column = predicted
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Scores:
    loss: float  # mean cross-entropy
    top1: float
    top5: float  # the true class among the 5 most likely (all of them when there are fewer)
    confusion: torch.Tensor  # (classes, classes) int64

    def per_class(self) -> list[float]:
        """Accuracy of each class (NaN for a class with no image in the split)."""
        counts = self.confusion.sum(dim=1).double()
        return (self.confusion.diagonal().double() / counts).tolist()

    def metrics(self, prefix: str) -> dict[str, float]:
        """Loss, top-1, and top-5 where it says something (more than five classes)."""
        top5 = {f"{prefix}top5": self.top5} if len(self.confusion) > 5 else {}
        return {f"{prefix}loss": self.loss, f"{prefix}acc": self.top1, **top5}


@torch.no_grad()
def classify(model, images: torch.Tensor, labels: torch.Tensor, prepare, batch_size: int, classes: int,
             device, autocast) -> Scores:
    """Every image through the model, batch by batch. prepare: uint8 (b, C, H, W) on the device -> model input."""
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    hits1 = torch.zeros((), device=device, dtype=torch.int64)
    hits5 = torch.zeros((), device=device, dtype=torch.int64)
    confusion = torch.zeros(classes * classes, device=device, dtype=torch.int64)
    k = min(5, classes)
    for start in range(0, len(labels), batch_size):
        x = images[start:start + batch_size].to(device, non_blocking=True)
        y = labels[start:start + batch_size].to(device, non_blocking=True)  # (b,)
        with autocast():
            logits = model(prepare(x)).float()  # (b, classes)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        top = logits.topk(k, dim=-1).indices  # (b, k)
        hits1 += (top[:, 0] == y).sum()
        hits5 += (top == y[:, None]).any(dim=-1).sum()
        confusion += torch.bincount(y * classes + top[:, 0], minlength=classes * classes)
    n = max(len(labels), 1)
    return Scores(loss_sum.item() / n, hits1.item() / n, hits5.item() / n, confusion.view(classes, classes).cpu())
