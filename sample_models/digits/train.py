"""Train the DigitsNet sample model on scikit-learn's bundled digits data set.

Usage (from any working directory):
    python sample_models/digits/train.py            # train, write all artifacts
    python sample_models/digits/train.py --check    # re-evaluate shipped weights only

Writes, next to this script:
    weights.safetensors          model.state_dict() (eval mode)
    data/calibration/image.npy   float32 [200, 1, 32, 32], preprocessed (from the training split)
    data/eval/image.npy          float32 [360, 1, 32, 32], preprocessed (held-out split)
    data/eval/labels.npy         int64   [360]
    labels.txt                   class names 0..9, one per line
"""

import argparse
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import DigitsNet  # noqa: E402

SEED = 0
NUM_EVAL = 360
NUM_CALIBRATION = 200
EPOCHS = 30
BATCH_SIZE = 64
LR = 3e-3
WEIGHT_DECAY = 1e-2
WARMUP_EPOCHS = 2
TARGET_ACCURACY = 0.97

WEIGHTS = HERE / "weights.safetensors"
CALIB_DIR = HERE / "data" / "calibration"
EVAL_DIR = HERE / "data" / "eval"
LABELS = HERE / "labels.txt"


def set_determinism(seed: int = SEED) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)


def preprocess(images: np.ndarray) -> torch.Tensor:
    """8x8 digits (values 0..16) -> normalized float32 [N, 1, 32, 32]."""
    x = torch.from_numpy(np.asarray(images, dtype=np.float32)).reshape(-1, 1, 8, 8)
    x = x / 16.0
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = (x - 0.5) / 0.5
    return x.contiguous()


def load_splits():
    digits = load_digits()
    images = preprocess(digits.images)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    idx = np.arange(len(labels))
    train_idx, eval_idx = train_test_split(
        idx, test_size=NUM_EVAL, stratify=digits.target, random_state=SEED
    )
    rng = np.random.default_rng(SEED)
    calib_idx = rng.choice(train_idx, size=NUM_CALIBRATION, replace=False)
    return images, labels, train_idx, eval_idx, calib_idx


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Small random affine: rotation +-10 deg, scale 0.9..1.1, shift up to 2 px."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(10)
    scale = 1.0 + (torch.rand(n, generator=gen) * 2 - 1) * 0.1
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2.0 * 2 / 32)  # 2 px in [-1, 1] grid units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Shift so the background (-1) maps to 0 and out-of-image pixels stay background.
    return F.grid_sample(x + 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1.0


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(xb).argmax(1) for xb in x.split(256)])
    return (pred == y).float().mean().item()


def lr_at(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return LR * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return LR * 0.5 * (1 + math.cos(math.pi * t))


def train() -> None:
    set_determinism()
    t0 = time.perf_counter()
    images, labels, train_idx, eval_idx, calib_idx = load_splits()
    x_train, y_train = images[train_idx], labels[train_idx]
    x_eval, y_eval = images[eval_idx], labels[eval_idx]

    # Artifacts that do not depend on training.
    CALIB_DIR.mkdir(parents=True, exist_ok=True)
    EVAL_DIR.mkdir(parents=True, exist_ok=True)
    np.save(CALIB_DIR / "image.npy", np.ascontiguousarray(images[calib_idx].numpy(), dtype=np.float32))
    np.save(EVAL_DIR / "image.npy", np.ascontiguousarray(x_eval.numpy(), dtype=np.float32))
    np.save(EVAL_DIR / "labels.npy", np.ascontiguousarray(y_eval.numpy(), dtype=np.int64))
    LABELS.write_text("".join(f"{i}\n" for i in range(10)))

    model = DigitsNet()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"train={len(train_idx)} eval={len(eval_idx)} calibration={len(calib_idx)} params={n_params}")

    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR,
    )
    gen = torch.Generator().manual_seed(SEED)
    steps_per_epoch = math.ceil(len(train_idx) / BATCH_SIZE)
    total_steps = EPOCHS * steps_per_epoch
    step = 0
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(train_idx), generator=gen)
        total_loss = 0.0
        for b in range(steps_per_epoch):
            bi = perm[b * BATCH_SIZE : (b + 1) * BATCH_SIZE]
            with torch.no_grad():
                xb = augment(x_train[bi], gen)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total_steps, WARMUP_EPOCHS * steps_per_epoch)
            loss = F.cross_entropy(model(xb), y_train[bi], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(bi)
            step += 1
        acc = accuracy(model, x_eval, y_eval)
        print(
            f"epoch {epoch + 1:2d}/{EPOCHS} loss {total_loss / len(train_idx):.4f} "
            f"eval_acc {acc:.4f} ({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )

    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(WEIGHTS))
    elapsed = time.perf_counter() - t0
    acc = accuracy(model, x_eval, y_eval)
    print(f"training wall time: {elapsed:.1f}s")
    print(f"final float eval top-1 accuracy: {acc:.4f} ({round(acc * NUM_EVAL)}/{NUM_EVAL})")
    if acc < TARGET_ACCURACY:
        sys.exit(f"accuracy {acc:.4f} below target {TARGET_ACCURACY}")


def check() -> None:
    """Load the shipped weights and recompute eval accuracy from data/eval (no training)."""
    set_determinism()
    model = DigitsNet()
    model.load_state_dict(load_file(str(WEIGHTS)))
    model.eval()
    x = torch.from_numpy(np.load(EVAL_DIR / "image.npy"))
    y = torch.from_numpy(np.load(EVAL_DIR / "labels.npy"))
    calib = np.load(CALIB_DIR / "image.npy")
    assert x.dtype == torch.float32 and tuple(x.shape) == (NUM_EVAL, 1, 32, 32), x.shape
    assert y.dtype == torch.int64 and tuple(y.shape) == (NUM_EVAL,), y.shape
    assert calib.dtype == np.float32 and calib.shape == (NUM_CALIBRATION, 1, 32, 32), calib.shape
    acc = accuracy(model, x, y)
    print(f"float eval top-1 accuracy (shipped weights): {acc:.4f} ({round(acc * NUM_EVAL)}/{NUM_EVAL})")
    if acc < TARGET_ACCURACY:
        sys.exit(f"accuracy {acc:.4f} below target {TARGET_ACCURACY}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="evaluate shipped weights without training")
    args = parser.parse_args()
    check() if args.check else train()
