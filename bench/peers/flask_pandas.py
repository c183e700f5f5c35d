"""The stack users run today (AWS's images, the BYOC example): gunicorn sync workers, Flask, and
pandas.read_csv for parsing, predicting with the same model files sagecraft trained. Tuned as a
careful user would: OMP_NUM_THREADS=1 (set by the benchmark) and the forest's n_jobs=1.

    MODEL_DIR=... gunicorn -w 2 -b 127.0.0.1:PORT flask_pandas:app
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import flask
import numpy as np
import pandas as pd

MODEL_DIR = Path(os.environ["MODEL_DIR"])
MANIFEST = json.loads((MODEL_DIR / "manifest.json").read_text())
FEATURES = [f["name"] for f in MANIFEST["features"]]

if MANIFEST["algorithm"] == "xgboost":
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(str(MODEL_DIR / "xgboost-model.ubj"))

    def predict(frame: pd.DataFrame) -> np.ndarray:
        return booster.predict(xgboost.DMatrix(frame))
else:
    import skops.io

    forest = skops.io.load(MODEL_DIR / "model.skops", trusted=["sklearn.tree._tree.Tree"])
    forest.n_jobs = 1  # at its best: joblib's threads cost more than one request's trees

    def predict(frame: pd.DataFrame) -> np.ndarray:
        return forest.predict(frame.to_numpy())


app = flask.Flask(__name__)


@app.route("/ping", methods=["GET"])
def ping() -> flask.Response:
    return flask.Response("", status=200)


@app.route("/invocations", methods=["POST"])
def invocations() -> flask.Response:
    if flask.request.content_type.startswith("application/json"):
        frame = pd.DataFrame(flask.request.get_json()["instances"], columns=FEATURES)
    else:
        frame = pd.read_csv(io.StringIO(flask.request.data.decode("utf-8")), header=None, names=FEATURES)
    out = io.StringIO()
    pd.DataFrame(predict(frame)).to_csv(out, header=False, index=False)
    return flask.Response(out.getvalue(), mimetype="text/csv")
