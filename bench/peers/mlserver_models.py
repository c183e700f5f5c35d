"""Write MLServer model folders for the benchmark, fitted with MLServer's own libraries.

Run with the MLServer environment's Python: `python mlserver_models.py TRAIN_CSV OUT_DIR`. The
models are of the same kind and size as sagecraft's (XGBoost: 100 rounds, depth 6; forest: 100
trees, depth 12) on the same data; MLServer's runtimes load XGBoost's JSON and joblib files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import joblib
import numpy as np
import xgboost
from sklearn.ensemble import RandomForestClassifier


def main() -> None:
    data = np.loadtxt(sys.argv[1], delimiter=",")
    out = Path(sys.argv[2])
    labels, features = data[:, 0], data[:, 1:]
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 6},
        xgboost.DMatrix(features, label=labels),
        num_boost_round=100,
    )
    forest = RandomForestClassifier(n_estimators=100, max_depth=12, n_jobs=1, random_state=0)
    forest.fit(features, labels)
    for name, implementation, file in (
        ("xgboost", "mlserver_xgboost.XGBoostModel", "model.json"),
        ("forest", "mlserver_sklearn.SKLearnModel", "model.joblib"),
    ):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        if name == "xgboost":
            booster.save_model(str(folder / file))
        else:
            joblib.dump(forest, folder / file)
        (folder / "model-settings.json").write_text(
            json.dumps({"name": name, "implementation": implementation, "parameters": {"uri": f"./{file}"}})
        )


if __name__ == "__main__":
    main()
