"""Rows of SageMaker's built-in XGBoost behaviour (../shared/docs/builtin-xgboost-compat.md) that
sagecraft now matches, through the real processes: hyperparameters and channels a built-in job
uses, and request forms its clients send. Test data in the shapes of AWS's own tests, generated
here."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from test_checkpoints import _checkpoint_rounds, _job, _start, _wait_for_checkpoint

from sagemaker_tree import Server, TrainingTree, regression_rows

RNG = np.random.default_rng(21)


def _abalone_libsvm(rows: int, *, weights: bool, empty_every: int = 7) -> tuple[str, np.ndarray]:
    """Abalone-style libsvm: 1-based indices, some `index:` pairs without a value, and (with
    `weights`) `label:weight` first tokens."""
    features = RNG.normal(size=(rows, 4))
    labels = np.round(5 + 2 * features[:, 0] - features[:, 1] + RNG.normal(scale=0.1, size=rows), 3)
    lines = []
    for row, (label, values) in enumerate(zip(labels, features, strict=True)):
        head = f"{label}:{1.0 + (row % 3)}" if weights else f"{label}"
        pairs = [
            f"{i + 1}:" if (row + i) % empty_every == 0 else f"{i + 1}:{v:.5f}" for i, v in enumerate(values)
        ]
        lines.append(" ".join([head, *pairs]))
    return "\n".join(lines) + "\n", features


def test_libsvm_with_label_weight_and_empty_values_trains_and_serves(tmp_path: Path) -> None:
    text, _ = _abalone_libsvm(600, weights=True)
    tree = TrainingTree(tmp_path / "weighted")
    tree.add_file("train", "abalone.libsvm", text)
    tree.channels(train="libsvm")  # the bare word AWS's own tests write
    tree.hyperparameters({"algorithm": "xgboost", "num_round": 20, "objective": "reg:squarederror"})
    result = tree.train()
    assert result.returncode == 0, tree.explain()
    assert "weights in the second column" in result.stderr
    assert "libsvm from the ContentType" in result.stderr
    unweighted = TrainingTree(tmp_path / "unweighted")
    unweighted.add_file("train", "abalone.libsvm", "\n".join(
        line.split(" ", 1)[0].split(":")[0] + " " + line.split(" ", 1)[1] for line in text.strip().split("\n")
    ) + "\n")  # fmt: skip
    unweighted.hyperparameters({"algorithm": "xgboost", "num_round": 20, "objective": "reg:squarederror"})
    assert unweighted.train().returncode == 0, unweighted.explain()
    weighted_model = xgb.Booster(model_file=str(tree.model_dir / "xgboost-model.ubj"))
    plain_model = xgb.Booster(model_file=str(unweighted.model_dir / "xgboost-model.ubj"))
    probe = np.hstack([np.full((50, 1), np.nan), RNG.normal(size=(50, 4))]).astype(np.float32)
    assert not np.array_equal(weighted_model.inplace_predict(probe), plain_model.inplace_predict(probe))
    server = Server(tree.base).wait_ready()
    try:
        answer = server.invoke("0 1:0.5 2: 3:1.5 4:-1\n", "text/libsvm")  # `2:` is a missing value
        assert answer.status_code == 200, answer.text
        expected = weighted_model.inplace_predict(
            np.array([[np.nan, 0.5, np.nan, 1.5, -1]], dtype=np.float32)
        )
        assert float(answer.text) == pytest.approx(float(expected[0]), rel=1e-6)
    finally:
        server.stop()


def test_a_libsvm_line_that_is_neither_is_named(tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "bad.libsvm", "1:2 1:0.5\n3 2:x\n")
    tree.hyperparameters({"algorithm": "xgboost"})
    assert tree.train().returncode == 1
    assert "bad.libsvm is not valid libsvm text: line 2: '2:x' is not index:value" in (tree.failure or "")


@pytest.fixture(scope="module")
def five_feature_server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    tree = TrainingTree(tmp_path_factory.mktemp("compat-serving"))
    tree.add_file(
        "train", "data.csv", regression_rows(3, 400).replace(",0.", ",0.").rsplit("\n", 1)[0] + "\n"
    )
    tree.hyperparameters({"algorithm": "xgboost", "num_round": 10})
    assert tree.train().returncode == 0, tree.explain()
    server = Server(tree.base).wait_ready()
    yield server
    server.stop()


@pytest.mark.parametrize("separator", ["\t", ";", "|"])
def test_csv_delimiters_are_sniffed_per_request(five_feature_server: Server, separator: str) -> None:
    rows = ["0.5,1,2,3,4", "1.5,-1,0,2,1"]
    comma = five_feature_server.invoke("\n".join(rows))
    other = five_feature_server.invoke("\n".join(r.replace(",", separator) for r in rows))
    assert other.status_code == 200, other.text
    assert other.text == comma.text
    large = "\n".join([rows[0].replace(",", separator)] * 20_000)  # over pyarrow's threshold
    first = comma.text.split("\n")[0]
    assert five_feature_server.invoke(large).text == f"{first}\n" * 20_000


def test_a_row_of_only_empty_fields_is_a_row_of_missing_values(five_feature_server: Server) -> None:
    answer = five_feature_server.invoke("0.5,1,2,3,4\n,,,,\n")
    assert answer.status_code == 200, answer.text
    assert len(answer.text.split()) == 2
    assert five_feature_server.invoke("0.5,1,2,3,4\n\n1,1,1,1,1\n").status_code == 400  # an empty line
    assert five_feature_server.invoke(",,\n").status_code == 400  # three fields of five


def test_builtin_metric_names_print_each_round_and_drive_early_stopping(tmp_path: Path) -> None:
    names = ["balanced_accuracy", "precision", "recall", "f1_binary", "f1_macro", "precision_macro",
             "precision_micro", "recall_macro", "recall_micro"]  # fmt: skip
    tree = TrainingTree(tmp_path)
    x = RNG.normal(size=(800, 3))
    y = (x[:, 0] + 0.3 * RNG.normal(size=800) > 0.4).astype(int)
    lines = [f"{label}," + ",".join(f"{v:.5f}" for v in row) for label, row in zip(y, x, strict=True)]
    tree.add_file("train", "t.csv", "\n".join(lines[:600]) + "\n")
    tree.add_file("validation", "v.csv", "\n".join(lines[600:]) + "\n")
    tree.hyperparameters(
        {"algorithm": "xgboost", "objective": "binary:logistic", "num_round": 40, "early_stopping_rounds": 5,
         "eval_metric": ",".join(names), "_tuning_objective_metric": "validation:f1_binary"}
    )  # fmt: skip
    result = tree.train()
    assert result.returncode == 0, tree.explain()
    first = next(line for line in result.stdout.splitlines() if line.startswith("[0]"))
    for name in names:
        assert f"validation-{name}:" in first, first
    values = dict(field.split(":") for field in first.split("\t")[1:])
    assert 0 < float(values["validation-f1_binary"]) <= 1
    assert float(values["validation-precision_micro"]) == float(values["validation-recall_micro"])


def test_legacy_names_and_gpu_hist_train_with_warnings(tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "t.csv", regression_rows(4, 300))
    tree.hyperparameters(
        {"algorithm": "xgboost", "num_round": 5, "tree_method": "gpu_hist", "predictor": "cpu_predictor",
         "sketch_eps": 0.03, "dsplit": "row", "save_model_on_termination": "true"}
    )  # fmt: skip
    result = tree.train()
    assert result.returncode == 0, tree.explain()
    assert "tree_method=gpu_hist: this XGBoost" in result.stderr
    for name in ("predictor", "sketch_eps", "dsplit"):
        assert f"hyperparameter '{name}' has no effect on XGBoost" in result.stderr


@pytest.mark.slow
def test_sigterm_with_save_model_on_termination_false_writes_no_model(tmp_path: Path) -> None:
    tree = _job(tmp_path, rounds=100_000)
    hyperparameters = tree.base / "input" / "config" / "hyperparameters.json"
    hyperparameters.write_text(
        hyperparameters.read_text().replace("{", '{"save_model_on_termination": "false", ', 1)
    )
    process = _start(tree)
    _wait_for_checkpoint(tree, process, 10)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert time.monotonic() - started < 30
    assert process.returncode == 1, stderr
    assert "save_model_on_termination is false, so no model was written" in (tree.failure or "")
    assert not (tree.model_dir / "xgboost-model.ubj").exists()
    assert _checkpoint_rounds(tree.base / "checkpoints")  # the checkpoints stay, for a resumed job


@pytest.mark.parametrize(
    ("value", "refusal"),
    [
        ("[[0,1],[2,3,4]]", None),  # the README's form, which a generic Estimator decodes to a list
        ('[["f0","f1"]]', None),  # feature names
        ("[[0,1],[9]]", "interaction_constraints names column 9, but the data has 5 features"),
        ('[["f0","nope"]]', "Constrained features are not a subset"),
    ],
)
def test_interaction_constraints_in_the_documented_forms(
    tmp_path: Path, value: str, refusal: str | None
) -> None:
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "d.csv", regression_rows(1, 200))
    tree.hyperparameters(
        {"algorithm": "xgboost", "num_round": 3, "interaction_constraints": value,
         "monotone_constraints": "(1,0,0,0,0)"}
    )  # fmt: skip
    result = tree.train()
    if refusal is None:
        assert result.returncode == 0, tree.explain()
    else:
        assert result.returncode == 1 and refusal in (tree.failure or ""), tree.explain()
