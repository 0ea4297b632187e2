"""Train the DetectorNet sample model on seeded synthetic scenes (scenes.py).

Usage (from any working directory, with edgeq installed in the interpreter's environment):
    python sample_models/detector/train.py            # train, write all artifacts
    python sample_models/detector/train.py --check    # re-evaluate shipped weights only

Writes, next to this script:
    weights.safetensors          model.state_dict() (eval mode)
    data/calibration.npz         np.savez_compressed, one array "image": float32 [128, 3, 128, 128],
                                 drawn (seed 0) from the training scenes
    data/eval/image.npy          float32 [96, 3, 128, 128], held-out scenes (their own seed)
    data/eval/boxes.npy          float32 [96, 4, 4]  xywh pixel boxes, zeros pad
    data/eval/classes.npy        int64   [96, 4]     class ids, -1 pads
    labels.txt                   class names, one per line

mAP is measured with edgeq's own detection code (edgeq.tasks.detection.DetectionMetrics) with the
box format and thresholds of edgeq.toml, one image at a time against the labelled boxes, as
`edgeq build` scores the float model ("mAP@0.5 (labels)" of its report).
"""

import argparse
import math
import random
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from model import STRIDE, DetectorNet  # noqa: E402
from scenes import CLASSES, IMAGE_SIZE, MAX_OBJECTS, make_scenes, pad_labels  # noqa: E402

from edgeq.tasks.detection import DetectionMetrics  # noqa: E402

SEED = 0
TRAIN_SEED, EVAL_SEED = 1, 2  # scene generator seeds: the eval scenes are not training scenes
NUM_TRAIN = 3000
NUM_EVAL = 96
NUM_CALIBRATION = 128
EPOCHS = 8
BATCH_SIZE = 32
LR = 3e-3
WEIGHT_DECAY = 5e-4
WARMUP_EPOCHS = 1
BOX_GAIN, L1_GAIN, CLS_GAIN = 5.0, 1.0, 1.0
TARGET_MAP50 = 0.9

WEIGHTS = HERE / "weights.safetensors"
CALIB_NPZ = HERE / "data" / "calibration.npz"
EVAL_DIR = HERE / "data" / "eval"
LABELS = HERE / "labels.txt"
TASK = tomllib.loads((HERE / "edgeq.toml").read_text())["task"]


def set_determinism(seed: int = SEED) -> None:
    """Seed python, numpy and torch; deterministic kernels, 2 threads."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)


def build_targets(boxes: list[np.ndarray], classes: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor-free assignment: an object is the target of the cell holding its centre and of the
    nearest neighbouring cell along x and along y (YOLOv5-style, 3 anchors an object). An anchor
    claimed by several objects keeps the one whose centre is nearest its own.
    Returns target boxes [images, N, 4] (xywh pixels) and classes [images, N] (-1: background)."""
    cells = IMAGE_SIZE // STRIDE
    n_anchors = cells * cells
    tbox = np.zeros((len(boxes), n_anchors, 4), dtype=np.float32)
    tcls = np.full((len(boxes), n_anchors), -1, dtype=np.int64)
    for k, (bs, cs) in enumerate(zip(boxes, classes, strict=True)):
        dist = np.full(n_anchors, np.inf)
        for b, c in zip(bs, cs, strict=True):
            cx, cy = b[0] / STRIDE, b[1] / STRIDE
            gx, gy = min(int(cx), cells - 1), min(int(cy), cells - 1)
            nx = gx - 1 if cx - gx < 0.5 else gx + 1
            ny = gy - 1 if cy - gy < 0.5 else gy + 1
            for x, y in ((gx, gy), (nx, gy), (gx, ny)):
                if not (0 <= x < cells and 0 <= y < cells):
                    continue
                a = y * cells + x
                d = (x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2
                if d < dist[a]:
                    dist[a], tbox[k, a], tcls[k, a] = d, b, c
    return torch.from_numpy(tbox), torch.from_numpy(tcls)


def flip(x: torch.Tensor, tbox: torch.Tensor, tcls: torch.Tensor, gen: torch.Generator):
    """Random horizontal and vertical flips, each with probability 0.5 per image, images and targets
    together (a flipped triangle is still a triangle: the scenes hold both orientations)."""
    cells = IMAGE_SIZE // STRIDE
    b = x.shape[0]
    tbox = tbox.reshape(b, cells, cells, 4)
    tcls = tcls.reshape(b, cells, cells)
    for img_dim, grid_dim, coord in ((3, 2, 0), (2, 1, 1)):  # horizontal, then vertical
        f = torch.rand(b, generator=gen) < 0.5
        x = torch.where(f[:, None, None, None], x.flip(img_dim), x)
        flipped = tbox.flip(grid_dim).clone()
        flipped[..., coord] = IMAGE_SIZE - flipped[..., coord]
        tbox = torch.where(f[:, None, None, None], flipped, tbox)
        tcls = torch.where(f[:, None, None], tcls.flip(grid_dim), tcls)
    return x, tbox.reshape(b, -1, 4), tcls.reshape(b, -1)


def giou(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Generalized IoU of matching xywh boxes [K, 4]."""
    p1, p2 = p[:, :2] - p[:, 2:] / 2, p[:, :2] + p[:, 2:] / 2
    t1, t2 = t[:, :2] - t[:, 2:] / 2, t[:, :2] + t[:, 2:] / 2
    inter = (torch.minimum(p2, t2) - torch.maximum(p1, t1)).clamp(min=0).prod(1)
    union = p[:, 2:].prod(1) + t[:, 2:].prod(1) - inter
    iou = inter / union
    hull = (torch.maximum(p2, t2) - torch.minimum(p1, t1)).prod(1)
    return iou - (hull - union) / hull


def loss_fn(model: DetectorNet, x: torch.Tensor, tbox: torch.Tensor, tcls: torch.Tensor) -> torch.Tensor:
    """GIoU + L1 (in strides) on the positive anchors' boxes, BCE on every anchor's class scores
    (summed, divided by the number of positives)."""
    txy, twh, logits = model.raw(x)
    xy, wh = model.decode(txy, twh)
    pred = torch.cat([xy, wh], dim=1).transpose(1, 2)  # [B, N, 4]
    pos = tcls >= 0
    n_pos = max(int(pos.sum()), 1)
    p, t = pred[pos], tbox[pos]
    box_loss = (1.0 - giou(p, t)).mean()
    l1_loss = ((p - t).abs() / STRIDE).mean()
    target = F.one_hot(tcls.clamp(min=0), model.num_classes).float() * pos[..., None].float()
    cls_loss = F.binary_cross_entropy_with_logits(logits.transpose(1, 2), target, reduction="sum") / n_pos
    return BOX_GAIN * box_loss + L1_GAIN * l1_loss + CLS_GAIN * cls_loss


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """The model's output [images, 4 + C, N] in eval mode, as float32 numpy."""
    model.eval()
    return torch.cat([model(xb) for xb in x.split(64)]).numpy()


def truth_of(boxes: np.ndarray, classes: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image, its labelled boxes (xyxy, float64) and classes, read from the padded arrays as
    edgeq's detection task reads boxes.npy / classes.npy (box_format xywh)."""
    truth = []
    for b, c in zip(np.asarray(boxes, np.float64), np.asarray(classes, np.int64), strict=True):
        keep = c >= 0
        b = b[keep]
        truth.append((np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1), c[keep]))
    return truth


def detection_map(outputs: np.ndarray, truth: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """(mAP@0.5, mAP@0.5:0.95) of the float outputs [images, 4 + C, N] against the labelled boxes,
    image by image with edgeq's DetectionMetrics and edgeq.toml's box format and thresholds."""
    metrics = DetectionMetrics(TASK["box_format"], TASK["score_threshold"], TASK["nms_iou"])
    for k, t in enumerate(truth):
        out = outputs[k : k + 1]
        metrics.update(out, out, [t])
    result = metrics.result()
    return result["map50"], result["map"]


def lr_at(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 2% of LR."""
    if step < warmup:
        return LR * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return LR * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def train() -> None:
    """Generate the scenes, write the data files, train, save the weights and report mAP."""
    set_determinism()
    t0 = time.perf_counter()
    x_train, train_boxes, train_classes = make_scenes(NUM_TRAIN, TRAIN_SEED)
    x_eval, eval_boxes, eval_classes = make_scenes(NUM_EVAL, EVAL_SEED)
    calib_idx = np.sort(np.random.default_rng(SEED).choice(NUM_TRAIN, size=NUM_CALIBRATION, replace=False))
    eval_boxes_pad, eval_classes_pad = pad_labels(eval_boxes, eval_classes, MAX_OBJECTS)

    # Artifacts that do not depend on training.
    EVAL_DIR.mkdir(parents=True, exist_ok=True)
    # One array named after the model's input, as edgeq reads an .npz. Byte-reproducible: zipfile stamps
    # the members it opens for writing by name with 1980-01-01 00:00, not the current time.
    np.savez_compressed(CALIB_NPZ, image=np.ascontiguousarray(x_train[calib_idx], dtype=np.float32))
    np.save(EVAL_DIR / "image.npy", np.ascontiguousarray(x_eval, dtype=np.float32))
    np.save(EVAL_DIR / "boxes.npy", eval_boxes_pad)
    np.save(EVAL_DIR / "classes.npy", eval_classes_pad)
    LABELS.write_text("".join(f"{c}\n" for c in CLASSES))

    tbox, tcls = build_targets(train_boxes, train_classes)
    x_train_t = torch.from_numpy(x_train)
    x_eval_t = torch.from_numpy(x_eval)
    truth = truth_of(eval_boxes_pad, eval_classes_pad)
    n_objects = sum(len(b) for b in train_boxes)
    model = DetectorNet(num_classes=len(CLASSES), image_size=IMAGE_SIZE)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"train={NUM_TRAIN} ({n_objects} objects) eval={NUM_EVAL} ({sum(len(b) for b in eval_boxes)} objects) "
          f"calibration={NUM_CALIBRATION} params={n_params} scenes generated in {time.perf_counter() - t0:.1f}s",
          flush=True)

    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}], lr=LR
    )
    gen = torch.Generator().manual_seed(SEED)
    steps_per_epoch = math.ceil(NUM_TRAIN / BATCH_SIZE)
    total_steps = EPOCHS * steps_per_epoch
    step = 0
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(NUM_TRAIN, generator=gen)
        total_loss = 0.0
        for b in range(steps_per_epoch):
            bi = perm[b * BATCH_SIZE : (b + 1) * BATCH_SIZE]
            xb, tb, tc = flip(x_train_t[bi], tbox[bi], tcls[bi], gen)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total_steps, WARMUP_EPOCHS * steps_per_epoch)
            loss = loss_fn(model, xb, tb, tc)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(bi)
            step += 1
        map50, map_all = detection_map(predict(model, x_eval_t), truth)
        print(f"epoch {epoch + 1:2d}/{EPOCHS} loss {total_loss / NUM_TRAIN:.4f} eval mAP@0.5 {map50:.4f} "
              f"mAP@0.5:0.95 {map_all:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)

    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(WEIGHTS))
    elapsed = time.perf_counter() - t0
    map50, map_all = detection_map(predict(model, x_eval_t), truth)
    print(f"training wall time: {elapsed:.1f}s")
    print(f"final float eval mAP@0.5: {map50:.4f}  mAP@0.5:0.95: {map_all:.4f} ({NUM_EVAL} images)")
    if map50 < TARGET_MAP50:
        sys.exit(f"mAP@0.5 {map50:.4f} below target {TARGET_MAP50}")


def check() -> None:
    """Load the shipped weights and recompute eval mAP from data/eval (no training)."""
    set_determinism()
    model = DetectorNet(num_classes=len(CLASSES), image_size=IMAGE_SIZE)
    model.load_state_dict(load_file(str(WEIGHTS)))
    model.eval()
    x = np.load(EVAL_DIR / "image.npy")
    boxes = np.load(EVAL_DIR / "boxes.npy")
    classes = np.load(EVAL_DIR / "classes.npy")
    with np.load(CALIB_NPZ, allow_pickle=False) as npz:
        assert list(npz.keys()) == ["image"], list(npz.keys())
        calib = npz["image"]
    shape = (3, IMAGE_SIZE, IMAGE_SIZE)
    assert x.dtype == np.float32 and x.shape == (NUM_EVAL, *shape), x.shape
    assert boxes.dtype == np.float32 and boxes.shape == (NUM_EVAL, MAX_OBJECTS, 4), boxes.shape
    assert classes.dtype == np.int64 and classes.shape == (NUM_EVAL, MAX_OBJECTS), classes.shape
    assert calib.dtype == np.float32 and calib.shape == (NUM_CALIBRATION, *shape), calib.shape
    for name, arr in (("eval", x), ("calibration", calib)):  # 8-bit pixels / 255, as edgeq.toml says
        assert np.array_equal(np.round(arr * 255).astype(np.float32) / 255, arr), f"{name} images are not k / 255"
    map50, map_all = detection_map(predict(model, torch.from_numpy(x)), truth_of(boxes, classes))
    print(f"float eval mAP@0.5 (shipped weights): {map50:.4f}  mAP@0.5:0.95: {map_all:.4f} ({NUM_EVAL} images, "
          f"{int((classes >= 0).sum())} objects)")
    if map50 < TARGET_MAP50:
        sys.exit(f"mAP@0.5 {map50:.4f} below target {TARGET_MAP50}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="evaluate shipped weights without training")
    args = parser.parse_args()
    check() if args.check else train()
