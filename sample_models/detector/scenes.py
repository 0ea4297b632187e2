"""Seeded synthetic scenes for the detector sample (numpy only).

Each scene is a 3 x 128 x 128 float32 RGB image with values in [0, 1] (already preprocessed: the
model is fed exactly these tensors) holding 1 to 4 objects of three classes: 0 "circle",
1 "square", 2 "triangle". Objects are 18-54 px, in random colours that contrast with the
background under them (and with any object they overlap), fully inside the image. A placement
that overlaps an earlier object too much (IoU > 0.3, or more than 35% of the smaller box covered)
is redrawn, so objects may overlap a little but never hide each other. The background is either
a solid colour or a linear gradient between two colours; mild Gaussian noise is added over the
whole image at the end. Edges are anti-aliased (4 x 4 supersampling). Last, like a photo's 8-bit
pixels after the preprocessing ``x / 255``, every value is rounded to a multiple of 1/255
(``round(x * 255) / 255``), so ``np.round(image * 255).astype(np.uint8)`` recovers 8-bit pixels exactly.

Boxes are in PIXELS of the 128 x 128 image, format xywh (centre x, centre y, width, height); pixel
(row i, column j) covers [j, j + 1) x [i, i + 1), so a box's edges are the shape's exact extent.

    from scenes import make_scenes, pad_labels
    images, boxes, classes = make_scenes(100, seed=0)   # [100, 3, 128, 128], list of [k, 4], list of [k]
    boxes_padded, classes_padded = pad_labels(boxes, classes)  # [100, 4, 4] float32, [100, 4] int64 (-1 pads)

Same seed, same scenes (byte for byte): only numpy's PCG64 ``default_rng`` is used.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CLASSES", "IMAGE_SIZE", "MAX_OBJECTS", "make_scenes", "pad_labels"]

CLASSES = ("circle", "square", "triangle")
IMAGE_SIZE = 128
MIN_OBJECTS, MAX_OBJECTS = 1, 4
MIN_SIZE, MAX_SIZE = 18.0, 54.0  # object width (and about its height), pixels
MAX_IOU = 0.3  # a placement overlapping an earlier object more than this is redrawn
MAX_COVER = 0.35  # ... or covering more than this share of the smaller of the two boxes
MIN_CONTRAST = 0.35  # RGB distance (0..sqrt(3)) from every background pixel under the box, and overlapped objects
MARGIN = 1.0  # pixels kept free at the image border
SUB = 4  # supersampling per axis for anti-aliased edges
PLACEMENT_TRIES = 50
COLOUR_TRIES = 100


def _background(rng: np.random.Generator) -> np.ndarray:
    """A solid colour or a linear gradient between two colours, [3, H, W] float64 in [0, 1]."""
    s = IMAGE_SIZE
    c0 = rng.uniform(0.0, 1.0, 3)
    if rng.random() < 0.5:
        return np.broadcast_to(c0[:, None, None], (3, s, s)).copy()
    c1 = np.clip(c0 + rng.uniform(-0.5, 0.5, 3), 0.0, 1.0)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64) + 0.5
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = (t - t.min()) / (t.max() - t.min())
    return c0[:, None, None] + (c1 - c0)[:, None, None] * t[None]


def _coverage(cls: int, box: np.ndarray, flip: bool, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Share of each pixel of rows y0:y1, columns x0:x1 inside the shape (SUB x SUB samples a pixel)."""
    cx, cy, w, h = box
    offs = (np.arange(SUB) + 0.5) / SUB
    ys = (np.arange(y0, y1)[:, None] + offs[None, :]).reshape(-1)  # sample rows
    xs = (np.arange(x0, x1)[:, None] + offs[None, :]).reshape(-1)
    y, x = ys[:, None], xs[None, :]
    if cls == 0:  # circle of diameter w (= h)
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= (w / 2) ** 2
    elif cls == 1:  # axis-aligned square
        inside = (np.abs(x - cx) <= w / 2) & (np.abs(y - cy) <= h / 2)
    else:  # isosceles triangle, apex up (or down when flipped), base w, height h
        depth = (y - (cy - h / 2)) / h if not flip else ((cy + h / 2) - y) / h  # 0 at the apex, 1 at the base
        inside = (depth >= 0) & (depth <= 1) & (np.abs(x - cx) <= (w / 2) * depth)
    inside = inside.astype(np.float64).reshape(y1 - y0, SUB, x1 - x0, SUB)
    return inside.mean(axis=(1, 3))


def _overlap(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(IoU, intersection / smaller area) of two xywh boxes."""
    lt = np.maximum(a[:2] - a[2:] / 2, b[:2] - b[2:] / 2)
    rb = np.minimum(a[:2] + a[2:] / 2, b[:2] + b[2:] / 2)
    inter = float(np.prod(np.clip(rb - lt, 0.0, None)))
    area_a, area_b = float(a[2] * a[3]), float(b[2] * b[3])
    return inter / (area_a + area_b - inter), inter / min(area_a, area_b)


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = IMAGE_SIZE
    background = _background(rng)
    img = background.copy()
    n = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    boxes: list[np.ndarray] = []
    classes: list[int] = []
    colours: list[np.ndarray] = []
    for _ in range(n):
        cls = int(rng.integers(0, len(CLASSES)))
        w = rng.uniform(MIN_SIZE, MAX_SIZE)
        h = w if cls != 2 else w * rng.uniform(0.8, 1.1)
        flip = bool(rng.random() < 0.5)
        box = None
        for _ in range(PLACEMENT_TRIES):
            cand = np.array([rng.uniform(w / 2 + MARGIN, s - w / 2 - MARGIN),
                             rng.uniform(h / 2 + MARGIN, s - h / 2 - MARGIN), w, h])
            overlaps = [_overlap(cand, b) for b in boxes]
            if all(iou <= MAX_IOU and cover <= MAX_COVER for iou, cover in overlaps):
                box = cand
                break
        if box is None:
            continue  # no room: this scene has fewer objects
        x0, y0 = int(np.floor(box[0] - w / 2)), int(np.floor(box[1] - h / 2))
        x1, y1 = int(np.ceil(box[0] + w / 2)), int(np.ceil(box[1] + h / 2))
        under = background[:, y0:y1, x0:x1].reshape(3, -1)
        touching = [c for b, c in zip(boxes, colours, strict=True) if _overlap(box, b)[0] > 0]
        colour = None
        for _ in range(COLOUR_TRIES):
            cand_colour = rng.uniform(0.0, 1.0, 3)
            if np.sqrt(((under - cand_colour[:, None]) ** 2).sum(0)).min() >= MIN_CONTRAST and all(
                    np.sqrt(((cand_colour - c) ** 2).sum()) >= MIN_CONTRAST for c in touching):
                colour = cand_colour
                break
        if colour is None:
            continue  # no contrasting colour found (does not happen in practice)
        alpha = _coverage(cls, box, flip, x0, y0, x1, y1)[None]
        img[:, y0:y1, x0:x1] = img[:, y0:y1, x0:x1] * (1.0 - alpha) + colour[:, None, None] * alpha
        boxes.append(box)
        classes.append(cls)
        colours.append(colour)
    sigma = rng.uniform(0.01, 0.04)
    img = np.clip(img + rng.normal(0.0, sigma, img.shape), 0.0, 1.0)
    img = np.round(img * 255.0) / 255.0  # 8-bit pixels, as a photo's after x / 255
    return (img.astype(np.float32), np.array(boxes, dtype=np.float32).reshape(-1, 4),
            np.array(classes, dtype=np.int64))


def make_scenes(count: int, seed: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """``count`` scenes from ``seed``: images float32 [count, 3, 128, 128] in [0, 1] (multiples of 1/255), and per image its
    boxes float32 [k, 4] (xywh, pixels) and class ids int64 [k] (1 <= k <= 4)."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    boxes, classes = [], []
    for k in range(count):
        images[k], b, c = _scene(rng)
        boxes.append(b)
        classes.append(c)
    return images, boxes, classes


def pad_labels(boxes: list[np.ndarray], classes: list[np.ndarray], max_objects: int = MAX_OBJECTS,
               ) -> tuple[np.ndarray, np.ndarray]:
    """edgeq's labelled-boxes format: boxes float32 [images, M, 4] (zeros pad) and classes int64
    [images, M] (-1 pads an image with fewer than M objects)."""
    out_b = np.zeros((len(boxes), max_objects, 4), dtype=np.float32)
    out_c = np.full((len(boxes), max_objects), -1, dtype=np.int64)
    for k, (b, c) in enumerate(zip(boxes, classes, strict=True)):
        out_b[k, : len(b)] = b
        out_c[k, : len(c)] = c
    return out_b, out_c
