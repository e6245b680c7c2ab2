"""Train one linear probe the way Holmes does, and score it on the test split.

Probe: dropout 0.2 + one linear layer. Adam (lr 1e-3), batch 16, at most 20 epochs, early
stopping with patience 5 on the dev loss, and the best (lowest dev loss) weights are tested.
Metric: macro-F1 for classification, Pearson correlation for regression (``num_labels: 1``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class ProbeHyper:
    dropout: float = 0.2
    lr: float = 1e-3
    batch_size: int = 16
    max_epochs: int = 20
    patience: int = 5
    eval_batch: int = 300


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean F1 over the classes that occur in the labels or the predictions."""
    classes = np.union1d(y_true, y_pred)
    scores = []
    for c in classes:
        tp = float(np.sum((y_pred == c) & (y_true == c)))
        fp = float(np.sum((y_pred == c) & (y_true != c)))
        fn = float(np.sum((y_pred != c) & (y_true == c)))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def pearson(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Pearson's r; 0.0 when either side is constant (no linear relation can be measured)."""
    if len(y_true) < 2 or np.std(y_true) == 0 or np.std(y_pred) == 0:
        return 0.0
    return float(np.corrcoef(y_true, y_pred)[0, 1])


def train_probe(
    x_train: torch.Tensor, y_train: torch.Tensor,
    x_dev: torch.Tensor, y_dev: torch.Tensor,
    x_test: torch.Tensor, y_test: torch.Tensor,
    num_labels: int, seed: int, hyper: ProbeHyper = ProbeHyper(),
) -> float:
    """Test score of a probe trained with ``seed`` (initialisation, dropout, batch order)."""
    regression = num_labels == 1
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    probe = nn.Sequential(nn.Dropout(hyper.dropout), nn.Linear(x_train.shape[1], num_labels))
    opt = torch.optim.Adam(probe.parameters(), lr=hyper.lr)
    loss_fn: nn.Module = nn.MSELoss() if regression else nn.CrossEntropyLoss()

    def target(y: torch.Tensor) -> torch.Tensor:
        return y.float().unsqueeze(1) if regression else y.long()

    def dev_loss() -> float:
        probe.eval()
        with torch.no_grad():
            total = 0.0
            for i in range(0, len(x_dev), hyper.eval_batch):
                xb, yb = x_dev[i:i + hyper.eval_batch], y_dev[i:i + hyper.eval_batch]
                total += float(loss_fn(probe(xb), target(yb))) * len(xb)
        return total / max(len(x_dev), 1)

    best_loss = float("inf")
    best_state = {k: v.clone() for k, v in probe.state_dict().items()}
    stale = 0
    for _ in range(hyper.max_epochs):
        probe.train()
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(order), hyper.batch_size):
            idx = order[i:i + hyper.batch_size]
            opt.zero_grad()
            loss_fn(probe(x_train[idx]), target(y_train[idx])).backward()
            opt.step()
        loss = dev_loss()
        if loss < best_loss:
            best_loss, stale = loss, 0
            best_state = {k: v.clone() for k, v in probe.state_dict().items()}
        else:
            stale += 1
            if stale >= hyper.patience:
                break
    probe.load_state_dict(best_state)
    probe.eval()
    with torch.no_grad():
        out = torch.cat([probe(x_test[i:i + hyper.eval_batch]) for i in range(0, len(x_test), hyper.eval_batch)])
    truth = y_test.numpy()
    if regression:
        return pearson(truth.astype(float), out.squeeze(1).numpy().astype(float))
    return macro_f1(truth.astype(int), out.argmax(dim=1).numpy())
