"""Tasks of the zoo, from data that packages bundle (no downloads).

Each task gives standardized float32 train/test splits, fixed by the task's own seed so every model
of a task sees the same data.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage
from sklearn import datasets
from sklearn.model_selection import train_test_split


@dataclass(frozen=True)
class TaskData:
    name: str
    dataset: str
    kind: str                 # "classification" | "regression" | "inr" | "sequence"
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_outputs: int

    @property
    def num_inputs(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))


def _split(name, dataset, kind, x, y, num_outputs, seed=0) -> TaskData:
    stratify = y if kind == "classification" else None
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=stratify)
    # standardized by the training split; a feature constant there (a digits pixel always blank) is
    # only centred: divided by its zero spread, a test value there would become enormous
    mean, std = x_tr.mean(0), x_tr.std(0)
    std = np.where(std > 1e-6, std, 1.0)
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    if kind == "regression":
        y_mean, y_std = y_tr.mean(), y_tr.std() + 1e-6
        y_tr, y_te = (y_tr - y_mean) / y_std, (y_te - y_mean) / y_std
        y_tr, y_te = y_tr.astype(np.float32)[:, None], y_te.astype(np.float32)[:, None]
    else:
        y_tr, y_te = y_tr.astype(np.int64), y_te.astype(np.int64)
    return TaskData(name, dataset, kind, x_tr.astype(np.float32), y_tr, x_te.astype(np.float32), y_te, num_outputs)


def _physics(name: str, rng: np.random.Generator, n: int = 1200):
    if name == "projectile":  # range of a projectile: v^2 sin(2 theta) / g
        v, theta = rng.uniform(1, 20, n), rng.uniform(0.05, 1.5, n)
        return np.stack([v, theta], 1), v ** 2 * np.sin(2 * theta) / 9.81
    if name == "oscillator":  # damped oscillator displacement exp(-gamma t) cos(omega t)
        t, gamma, omega = rng.uniform(0, 5, n), rng.uniform(0.05, 1, n), rng.uniform(0.5, 3, n)
        return np.stack([t, gamma, omega], 1), np.exp(-gamma * t) * np.cos(omega * t)
    raise KeyError(name)


def _sequence(rng: np.random.Generator, n: int = 2000, length: int = 12, vocab: int = 16):
    """Is the sequence's majority in the upper half of the vocabulary? Tokens [n, length], int."""
    tokens = rng.integers(0, vocab, (n, length))
    label = ((tokens >= vocab // 2).sum(1) * 2 > length).astype(np.int64)
    return tokens.astype(np.float32), label


#: name -> (dataset, kind). ``digits_image`` is digits as 1x8x8 images for CNNs.
TASKS = {
    "digits": ("sklearn.digits", "classification"),
    "iris": ("sklearn.iris", "classification"),
    "wine": ("sklearn.wine", "classification"),
    "breast_cancer": ("sklearn.breast_cancer", "classification"),
    "diabetes": ("sklearn.diabetes", "regression"),
    "moons": ("sklearn.make_moons", "classification"),
    "circles": ("sklearn.make_circles", "classification"),
    "clusters": ("sklearn.make_classification", "classification"),
    "friedman": ("sklearn.make_friedman1", "regression"),
    "projectile": ("physics.projectile", "regression"),
    "oscillator": ("physics.oscillator", "regression"),
    "majority": ("synthetic.majority_tokens", "sequence"),
}


@lru_cache(maxsize=None)
def load_task(name: str) -> TaskData:
    """The train/test data of a task (cached per process)."""
    dataset, kind = TASKS[name]
    rng = np.random.default_rng(12345)
    if name == "digits":
        d = datasets.load_digits()
        return _split(name, dataset, kind, d.images[:, None].astype(np.float32) / 16.0, d.target, 10)
    if name in ("iris", "wine", "breast_cancer", "diabetes"):
        d = getattr(datasets, f"load_{name}")()
        return _split(name, dataset, kind, d.data, d.target, 1 if kind == "regression" else len(set(d.target)))
    if name == "moons":
        x, y = datasets.make_moons(1000, noise=0.2, random_state=1)
    elif name == "circles":
        x, y = datasets.make_circles(1000, noise=0.1, factor=0.5, random_state=1)
    elif name == "clusters":
        x, y = datasets.make_classification(1500, 20, n_informative=8, n_classes=4, random_state=1)
    elif name == "friedman":
        x, y = datasets.make_friedman1(1500, noise=0.5, random_state=1)
    elif name in ("projectile", "oscillator"):
        x, y = _physics(name, rng)
    elif name == "majority":
        tokens, y = _sequence(rng)
        x_tr, x_te, y_tr, y_te = train_test_split(tokens, y, test_size=0.25, random_state=0)
        return TaskData(name, dataset, kind, x_tr, y_tr, x_te, y_te, 2)
    else:
        raise KeyError(name)
    return _split(name, dataset, kind, x, y, 1 if kind == "regression" else len(set(y)))


def _grid(side: int) -> np.ndarray:
    axis = np.linspace(-1, 1, side, dtype=np.float32)
    return np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)


@lru_cache(maxsize=None)
def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    d = datasets.load_digits()
    return d.images, d.target


def digit_image(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """An INR target from a digits image upsampled (bilinear) to 16x16 for training and 32x32 for testing
    (so the test measures interpolation): ``coords [N, 2]`` in [-1, 1], ``values [N, 1]`` in [-1, 1]
    for train then test, and the digit's label."""
    images, labels = _digit_images()
    image = images[index] / 8.0 - 1.0
    train, test = (ndimage.zoom(image, side / 8, order=1).reshape(-1, 1).astype(np.float32) for side in (16, 32))
    return _grid(16), train, _grid(32), test, int(labels[index])
