"""Model files in XGBoost's old binary format, written by XGBoost itself.

SageMaker's built-in XGBoost 1.x wrote every `xgboost-model` in that format; the XGBoost the suite
runs no longer writes (or reads) it. So the tests install XGBoost 2.1.4, the last release that
writes it (the layout is the one XGBoost 1.0-1.7 wrote: the same structs), into a folder of its
own with pip, beside the suite's own XGBoost, and train and save the models in a child process
that imports it from there. The child also writes what each booster predicts, in-process, so that
a served answer can be compared with the booster that wrote the file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

WRITER_VERSION = "2.1.4"
RNG = np.random.default_rng(41)
FEATURES = RNG.normal(size=(300, 4)).astype(np.float32)
FEATURES[RNG.random(FEATURES.shape) < 0.08] = np.nan  # missing values take each split's default
PROBE = RNG.normal(size=(30, 4)).astype(np.float32)
PROBE[::7, 1] = np.nan

# name -> (parameters, rounds, label rule)
MODELS: dict[str, tuple[dict[str, object], int, str]] = {
    "binary": ({"objective": "binary:logistic", "max_depth": 3}, 12, "binary"),
    "softprob": ({"objective": "multi:softprob", "num_class": 3, "max_depth": 3}, 8, "classes"),
    "softmax": ({"objective": "multi:softmax", "num_class": 3, "max_depth": 3}, 8, "classes"),
    "regression": ({"objective": "reg:squarederror", "base_score": 0.25}, 15, "value"),
    # Pruned trees (the exact method with a large gamma) keep deleted nodes in the file.
    "pruned": (
        {"objective": "reg:squarederror", "tree_method": "exact", "gamma": 2.0, "max_depth": 6},
        6,
        "value",
    ),
    "dart": ({"booster": "dart", "objective": "reg:squarederror", "rate_drop": 0.3}, 8, "value"),
    "linear": ({"booster": "gblinear", "objective": "reg:squarederror"}, 8, "value"),
    "forest": ({"objective": "binary:logistic", "num_parallel_tree": 4, "subsample": 0.7}, 3, "binary"),
    "poisson": ({"objective": "count:poisson"}, 10, "count"),
}

_WRITER = """
    import json, sys, warnings
    from pathlib import Path
    import numpy as np
    import xgboost as xgb
    assert xgb.__version__ == sys.argv[2], xgb.__version__
    warnings.simplefilter("ignore")  # "saving into deprecated binary model format"
    out = Path(sys.argv[1])
    X = np.load(out / "features.npy")
    probe = np.load(out / "probe.npy")
    filled = np.nan_to_num(X)
    labels = {
        "binary": (filled[:, 0] + filled[:, 2] > 0).astype(int),
        "classes": (filled[:, 0] > 0).astype(int) + (filled[:, 1] > 0.3).astype(int),
        "value": 2 * filled[:, 0] - filled[:, 3],
        "count": np.round(np.exp(filled[:, 0] / 2)),
    }
    for name, (params, rounds, rule) in json.loads((out / "models.json").read_text()).items():
        booster = xgb.train(params, xgb.DMatrix(X, label=labels[rule]), rounds)
        folder = out / name
        folder.mkdir()
        (folder / "xgboost-model").write_bytes(bytes(booster.save_raw("deprecated")))
        np.save(folder / "expected.npy", booster.predict(xgb.DMatrix(probe)))
        np.save(folder / "margin.npy", booster.predict(xgb.DMatrix(probe), output_margin=True))
"""


def install_writer(site: Path) -> Path:
    """XGBoost 2.1.4 installed with pip into `site` (not on the suite's path); `site`."""
    if not (site / "xgboost").is_dir():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
             "--target", str(site), f"xgboost-cpu=={WRITER_VERSION}"],
            check=True, timeout=600,
        )  # fmt: skip
    return site


def write_binary_models(site: Path, out: Path) -> Path:
    """Train MODELS with the XGBoost in `site` and save each as `out/<name>/xgboost-model` in
    the binary format, with `expected.npy` and `margin.npy`: its in-process predictions of PROBE."""
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "features.npy", FEATURES)
    np.save(out / "probe.npy", PROBE)
    (out / "models.json").write_text(json.dumps(MODELS))
    environment = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_WRITER), str(out), WRITER_VERSION],
        check=True, timeout=300, env=environment, cwd=out,
    )  # fmt: skip
    return out
