"""Train with several instances under the SageMaker SDK's local mode, then deploy and predict.

    ../shared/tools/sdk-local-mode && . /tmp/localmode/env.sh   # podman as docker, the SDK
    python scripts/sdk_local_mode_instances.py --instances 3

The SDK starts one container per instance from the image (localhost/sagecraft:smoke, which
../shared/tools/image-smoke builds) on one network, host names like algo-1-abcde resolvable by
DNS only, exactly as it drives a SageMaker training job; the model it writes is then deployed to a
local endpoint and asked for predictions with the SDK's own serializers. Exits 0 when the job
trained, the endpoint answered and its accuracy on held-out rows is over 0.9.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from sagemaker.deserializers import JSONDeserializer
from sagemaker.estimator import Estimator
from sagemaker.inputs import TrainingInput
from sagemaker.local import LocalSession
from sagemaker.serializers import CSVSerializer


def _rows(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, 5))
    return x, (x[:, 0] + x[:, 1] > 0).astype(int)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--image", default="localhost/sagecraft:smoke")
    parser.add_argument("--algorithm", default="xgboost")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sagecraft-local-mode-"))
    data = work / "train"
    data.mkdir()
    for part in range(2 * args.instances):  # FullyReplicated: the hosts divide the files
        x, y = _rows(part, 2000)
        np.savetxt(
            data / f"part-{part}.csv", np.column_stack([y, x]), delimiter=",", fmt=["%d"] + ["%.5f"] * 5
        )
    hyperparameters = (
        {"algorithm": "xgboost", "num_round": 10, "objective": "binary:logistic", "eval_metric": "accuracy"}
        if args.algorithm == "xgboost"
        else {"algorithm": args.algorithm, "task": "classification"}
    )
    session = LocalSession()
    session.config = {"local": {"local_code": True}}
    estimator = Estimator(
        image_uri=args.image,
        role="arn:aws:iam::111111111111:role/local",
        instance_count=args.instances,
        instance_type="local",
        sagemaker_session=session,
        hyperparameters=hyperparameters,
        output_path=f"file://{work / 'output'}",
    )
    channel = TrainingInput(f"file://{data}", content_type="text/csv", distribution="FullyReplicated")
    estimator.fit({"train": channel}, logs=True)
    print(f"model: {estimator.model_data}", flush=True)
    predictor = estimator.deploy(1, "local", serializer=CSVSerializer(), deserializer=JSONDeserializer())
    try:
        x, y = _rows(1000, 500)
        answers = predictor.predict(x)["predictions"]
        # XGBoost with the user's objective answers as the built-in algorithm: {"score": P(class 1)}.
        predicted = np.array([a["score"] > 0.5 if isinstance(a, dict) else a for a in answers], dtype=int)
    finally:
        predictor.delete_endpoint()
    accuracy = float(np.mean(predicted == y))
    print(f"{args.instances} instances: the endpoint's accuracy on 500 new rows: {accuracy:.3f}")
    if accuracy <= 0.9:
        raise SystemExit("accuracy too low")


if __name__ == "__main__":
    main()
