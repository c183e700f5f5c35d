"""Training with several instances: real `sagecraft train` processes as 3 hosts on one machine.

Each host has its own SageMaker tree and resourceconfig.json; they run in a private user, network
and mount namespace where algo-1..3 resolve to 127.0.0.1..3 (sagecraft.local_cluster), so the
tracker's port is private to each test and nothing of the machine changes.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from sagecraft.loaded_model import LoadedModel
from sagecraft.local_cluster import HostRun, LocalCluster
from sagemaker_tree import Server, TrainingTree, install_test_plugin

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not LocalCluster.available(), reason="needs user, network and mount namespaces"),
]

HOSTS = 3
FAST = {"collective_timeout": 20, "bootstrap_timeout": 120}


def _rows(seed: int, count: int, classes: tuple[str, ...] = ("no", "yes")) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, 5))
    score = x[:, 0] + x[:, 1] - 0.5 * x[:, 2]
    if len(classes) == 2:
        labels = np.where(score > 0, classes[1], classes[0])
    else:
        labels = np.array(classes)[np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))]
    return x, labels


def _csv(x: np.ndarray, labels: np.ndarray) -> str:
    """Header-less, label first: SageMaker's built-in algorithms' layout."""
    return "".join(
        f"{label},{','.join(f'{v:.5f}' for v in row)}\n" for label, row in zip(labels, x, strict=True)
    )


def _job(
    tmp_path: Path,
    hyperparameters: dict[str, object],
    distribution: str,
    hosts: int = HOSTS,
    validation: bool = False,
) -> list[TrainingTree]:
    trees = []
    for index in range(hosts):
        tree = TrainingTree(tmp_path / f"algo-{index + 1}")
        tree.hyperparameters({**FAST, **hyperparameters})
        tree.write_config(
            "inputdataconfig.json",
            {
                name: {
                    "TrainingInputMode": "File",
                    "S3DistributionType": distribution,
                    "ContentType": "text/csv",
                }
                for name in ("train", "validation")[: 2 if validation else 1]
            },
        )
        trees.append(tree)
    return trees


def _run(trees: list[TrainingTree], timeout: float = 300, **start: object) -> list[HostRun]:
    return LocalCluster([t.base for t in trees]).start(**start).wait(timeout)  # type: ignore[arg-type]


def _explain(results: list[HostRun]) -> str:
    return "\n".join(
        f"== {r.name}: exit {r.returncode}, failure {r.failure!r}\n{r.stdout[-1500:]}\n{r.stderr[-4000:]}"
        for r in results
    )


def _accuracy(model_dir: Path, x: np.ndarray, labels: np.ndarray) -> float:
    """The model's accuracy on rows it never saw, loaded as `sagecraft serve` loads it (the
    served answers of a model trained on several hosts are checked through the real server by
    test_a_class_and_a_category_on_one_shard_only_are_served_back)."""
    model = LoadedModel.load(model_dir)
    predicted = model.predict(pd.DataFrame(x.astype(np.float32), columns=model.feature_names))
    return float(np.mean(np.asarray(predicted) == labels))


def _one_host(
    tmp_path: Path, hyperparameters: dict[str, object], x: np.ndarray, labels: np.ndarray
) -> TrainingTree:
    tree = TrainingTree(tmp_path / "one-host")
    tree.hyperparameters(hyperparameters)
    tree.channels(train="text/csv")
    tree.add_file("train", "all.csv", _csv(x, labels))
    assert tree.train(timeout=300).returncode == 0, tree.explain()
    return tree


def _metric_lines(run: HostRun) -> list[str]:
    return [line for line in run.stdout.splitlines() if re.match(r"\[\d+\]\t", line)]


def test_xgboost_on_sharded_data_trains_one_model_on_the_leader(tmp_path: Path) -> None:
    """Each host trains on its own shard; only the leader prints metrics and writes model/; the
    model answers as well as one host's on all the rows; the printed accuracy is exact (sums
    over every host's rows, not an average of the hosts')."""
    x, labels = _rows(0, 3600)
    test_x, test_labels = _rows(1, 600)
    parameters = {"algorithm": "xgboost", "num_round": 15, "eval_metric": "accuracy"}
    trees = _job(tmp_path / "job", parameters, "ShardedByS3Key", hosts=2)
    shards = [(0, 1400), (1400, 3600)]  # unequal, as shards are
    for tree, (start, end) in zip(trees, shards, strict=True):
        tree.add_file("train", "part.csv", _csv(x[start:end], labels[start:end]))
    results = _run(trees)
    assert [r.returncode for r in results] == [0, 0], _explain(results)
    assert results[0].model_files == ["manifest.json", "xgboost-model.ubj"]
    assert results[1].model_files == []
    lines = _metric_lines(results[0])
    assert len(lines) == 15 and not _metric_lines(results[1])
    booster = xgb.Booster(model_file=str(trees[0].model_dir / "xgboost-model.ubj"))
    predicted = booster.inplace_predict(x.astype(np.float32)) > 0.5
    exact = float(np.mean(predicted == (labels == "yes")))
    assert lines[-1].startswith("[14]\t") and lines[-1].endswith(f"\ttrain-accuracy:{exact:.6g}")
    for index, (start, end) in enumerate(shards):
        assert (
            f"host algo-{index + 1} of 2 trains on {end - start} of the job's 3600 rows"
            in results[index].stderr
        )
    one = _one_host(tmp_path, parameters, x, labels)
    several, single = (
        _accuracy(trees[0].model_dir, test_x, test_labels),
        _accuracy(one.model_dir, test_x, test_labels),
    )
    assert abs(several - single) <= 0.02, (several, single)
    # Streamed (each host's shard parsed into batches, the schema agreed from their summaries):
    # the same model, to the byte.
    streamed = _job(tmp_path / "streamed", {**parameters, "streaming": "true"}, "ShardedByS3Key", hosts=2)
    for tree, (start, end) in zip(streamed, shards, strict=True):
        tree.add_file("train", "part.csv", _csv(x[start:end], labels[start:end]))
    results = _run(streamed)
    assert [r.returncode for r in results] == [0, 0], _explain(results)
    assert all("streamed:" in r.stderr for r in results)
    model = "xgboost-model.ubj"
    assert (streamed[0].model_dir / model).read_bytes() == (trees[0].model_dir / model).read_bytes()


def test_replicated_data_is_divided_among_the_hosts(tmp_path: Path) -> None:
    """FullyReplicated: every host holds every file, and each trains on about a third of the
    rows (whole files when there are enough; otherwise blocks of rows); validation likewise."""
    x, labels = _rows(2, 3000)
    parameters = {"algorithm": "xgboost", "num_round": 8, "early_stopping_rounds": 3, "eval_metric": "f1"}
    trees = _job(tmp_path, parameters, "FullyReplicated", validation=True)
    for tree in trees:
        for part in range(6):
            tree.add_file(
                "train",
                f"part-{part}.csv",
                _csv(x[part * 500 : (part + 1) * 500], labels[part * 500 : (part + 1) * 500]),
            )
        tree.add_file("validation", "one-file.csv", _csv(x[:300], labels[:300]))  # fewer files than hosts
    results = _run(trees)
    assert [r.returncode for r in results] == [0, 0, 0], _explain(results)
    for index, run in enumerate(results):
        assert f"host algo-{index + 1} of 3 trains on 1000 of the job's 3000 rows" in run.stderr
        assert "channel 'validation' (this host's share" in run.stderr and ": 100 rows" in run.stderr
    assert "validation-f1:" in _metric_lines(results[0])[-1]  # early stopping watches it
    test_x, test_labels = _rows(14, 600)
    one = _one_host(tmp_path, {"algorithm": "xgboost", "num_round": 8}, x, labels)
    several = _accuracy(trees[0].model_dir, test_x, test_labels)
    assert abs(several - _accuracy(one.model_dir, test_x, test_labels)) <= 0.02


def _maybe_table(x: np.ndarray, labels: np.ndarray, colour: np.ndarray, rows: range, drop: bool) -> str:
    keep = [i for i in rows if not drop or (labels[i] != "maybe" and colour[i] != "z")]
    body = "".join(f"{labels[i]},{colour[i]},{x[i, 0]:.4f},{x[i, 1]:.4f},{x[i, 2]:.4f}\n" for i in keep)
    return "label,colour,a,b,c\n" + body


def _three_classes(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three classes and a categorical feature whose level "z" only "maybe" rows have."""
    x, labels = _rows(seed, 1800, ("no", "maybe", "yes"))
    colour = np.where(x[:, 3] > 0, "red", "blue")
    colour[labels == "maybe"] = np.where(x[labels == "maybe", 4] > 0, "z", "red")
    return x, labels, colour


@pytest.mark.parametrize("algorithm", ["xgboost", "random_forest"])
def test_a_class_and_a_category_on_one_shard_only_are_served_back(tmp_path: Path, algorithm: str) -> None:
    """A class ("maybe") and a category ("z") appear on algo-2's shard only: the agreed classes
    and categories are unions, so the model knows both and serves them back."""
    x, labels, colour = _three_classes(3)
    size = {"num_round": 10} if algorithm == "xgboost" else {"n_estimators": 30}
    trees = _job(tmp_path, {"algorithm": algorithm, "target": "label", **size}, "ShardedByS3Key")
    trees[0].add_file("train", "a.csv", _maybe_table(x, labels, colour, range(0, 700), drop=True))
    trees[1].add_file("train", "b.csv", _maybe_table(x, labels, colour, range(700, 1500), drop=False))
    trees[2].add_file("train", "c.csv", _maybe_table(x, labels, colour, range(1500, 1800), drop=True))
    results = _run(trees)
    assert [r.returncode for r in results] == [0, 0, 0], _explain(results)
    manifest = json.loads((trees[0].model_dir / "manifest.json").read_text())
    assert manifest["classes"] == ["maybe", "no", "yes"]
    assert {f["name"]: f["categories"] for f in manifest["features"]}["colour"] == ["blue", "red", "z"]
    server = Server(trees[0].base).wait_ready()
    try:
        maybe = [i for i in range(700, 1500) if labels[i] == "maybe"][:30]
        body = "".join(f"{colour[i]},{x[i, 0]:.4f},{x[i, 1]:.4f},{x[i, 2]:.4f}\n" for i in maybe)
        answer = server.invoke(body, accept="application/json; output=probabilities")
        assert answer.status_code == 200, answer.text
        maybe_probability = np.array(answer.json()["predictions"])[:, 0]
        if algorithm == "xgboost":  # one model of every host's rows
            assert np.mean(maybe_probability > 0.5) >= 0.5, maybe_probability
        else:  # only algo-2's third of the trees ever saw "maybe": at most a third of the votes
            assert 0.2 < np.mean(maybe_probability) <= 1 / 3 + 1e-9, maybe_probability
    finally:
        server.stop()


def test_a_host_without_files_still_joins(tmp_path: Path) -> None:
    """algo-3 gets no object of the sharded channel (an empty folder): it joins with no rows and
    the job trains on the others' rows; XGBoost cannot do that with categorical features, which
    every host then says."""
    x, labels = _rows(11, 1200, ("no", "maybe", "yes"))
    trees = _job(tmp_path / "numeric", {"algorithm": "xgboost", "num_round": 5}, "ShardedByS3Key")
    trees[0].add_file("train", "a.csv", _csv(x[:600], labels[:600]))
    trees[1].add_file("train", "b.csv", _csv(x[600:], labels[600:]))
    (trees[2].base / "input" / "data" / "train").mkdir(parents=True)
    results = _run(trees)
    assert [r.returncode for r in results] == [0, 0, 0], _explain(results)
    assert "host algo-3 of 3 trains on 0 of the job's 1200 rows" in results[2].stderr
    assert json.loads((trees[0].model_dir / "manifest.json").read_text())["classes"] == ["maybe", "no", "yes"]

    x, labels, colour = _three_classes(12)
    trees = _job(tmp_path / "categorical", {"algorithm": "xgboost", "target": "label"}, "ShardedByS3Key")
    trees[0].add_file("train", "a.csv", _maybe_table(x, labels, colour, range(0, 900), drop=False))
    trees[1].add_file("train", "b.csv", _maybe_table(x, labels, colour, range(900, 1800), drop=False))
    (trees[2].base / "input" / "data" / "train").mkdir(parents=True)
    results = _run(trees)
    assert [r.returncode for r in results] == [1, 1, 1], _explain(results)
    for run in results:
        assert (
            "XGBoost cannot train on several hosts with categorical features unless every host has rows"
            in (run.failure or "")
        )


def test_mismatched_headers_fail_every_host_with_the_same_message(tmp_path: Path) -> None:
    trees = _job(tmp_path, {"algorithm": "xgboost", "num_round": 3, "target": "y"}, "ShardedByS3Key")
    for index, tree in enumerate(trees):
        last = "c" if index != 1 else "d"
        tree.add_file(
            "train",
            "part.csv",
            f"y,a,b,{last}\n" + "".join(f"{i % 2},{i},{i * 2},{i % 3}\n" for i in range(50)),
        )
    results = _run(trees)
    assert [r.returncode for r in results] == [1, 1, 1], _explain(results)
    failures = {(r.failure or "").split("\n\n")[0] for r in results}
    assert len(failures) == 1, failures
    (message,) = failures
    assert (
        "different columns" in message
        and "algo-1, algo-3: a, b, c" in message
        and "algo-2: a, b, d" in message
    )
    assert all(not r.model_files for r in results)


def test_a_host_whose_data_fails_fails_every_host_naming_it(tmp_path: Path) -> None:
    trees = _job(tmp_path, {"algorithm": "xgboost", "num_round": 3}, "ShardedByS3Key")
    x, labels = _rows(4, 300)
    for index, tree in enumerate(trees):
        text = _csv(x, labels) if index != 2 else "no,1,2\nyes,1,2,3,4\n"
        tree.add_file("train", "part.csv", text)
    results = _run(trees)
    assert [r.returncode for r in results] == [1, 1, 1], _explain(results)
    for run in results:
        assert (run.failure or "").startswith("host algo-3 of 3: "), run.failure
        assert "is not valid CSV: line 2 has 5 values" in (run.failure or "")


def test_hosts_with_different_hyperparameters_fail_together(tmp_path: Path) -> None:
    x, labels = _rows(5, 300)
    trees = _job(tmp_path, {"algorithm": "xgboost", "num_round": 3}, "ShardedByS3Key")
    trees[1].hyperparameters({**FAST, "algorithm": "xgboost", "num_round": 4})
    for tree in trees:
        tree.add_file("train", "part.csv", _csv(x, labels))
    results = _run(trees)
    assert [r.returncode for r in results] == [1, 1, 1], _explain(results)
    for run in results:
        assert "disagree on the hyperparameters" in (run.failure or "")
        assert "algo-1, algo-3: " in (run.failure or "") and "algo-2: " in (run.failure or "")


def _slow_job(tmp_path: Path, **extra: object) -> list[TrainingTree]:
    """Enough rounds on enough rows that a signal lands mid-training."""
    x, labels = _rows(6, 20000)
    trees = _job(
        tmp_path, {"algorithm": "xgboost", "num_round": 4000, "max_depth": 8, **extra}, "ShardedByS3Key"
    )
    for index, tree in enumerate(trees):
        part = slice(index * 6000, (index + 1) * 6000)
        tree.add_file("train", "part.csv", _csv(x[part], labels[part]))
    return trees


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSTOP])
def test_a_host_killed_or_stopped_mid_training_fails_the_others_promptly(tmp_path: Path, signum: int) -> None:
    """The hosts' watch sees a killed host at once and a stopped one after collective_timeout;
    the others write the failure naming the host and what became of it, and exit 1: none hangs
    (XGBoost's collective alone left a survivor blocked for good, 1 run in 6), none crashes."""
    trees = _slow_job(tmp_path, collective_timeout=8)
    running = LocalCluster([t.base for t in trees]).start()
    running.wait_for_output("algo-1", "[20]\t")
    began = time.monotonic()
    running.signal("algo-2", signum)
    try:
        deadline = began + 60
        while time.monotonic() < deadline and not all(
            (t.base / "output" / "failure").exists() for t in (trees[0], trees[2])
        ):
            time.sleep(0.2)
    finally:
        if signum == signal.SIGSTOP:
            running.signal("algo-2", signal.SIGKILL)
    results = running.wait(120)
    assert time.monotonic() - began < 90
    what = "ended after round" if signum == signal.SIGKILL else "stopped answering after round"
    for run in (results[0], results[2]):
        assert run.returncode == 1, _explain(results)
        assert (run.failure or "").startswith(f"host algo-2 of 3 {what} "), run.failure
        assert not run.model_files
    assert results[1].returncode == -signal.SIGKILL


def test_sigterm_to_every_host_stops_them_after_the_same_round(tmp_path: Path) -> None:
    """SageMaker stops a job by sending SIGTERM to every host: they agree on one last round, the
    leader saves the model and a checkpoint, every host exits 0."""
    trees = _slow_job(tmp_path)
    for tree in trees:
        tree.write_config("checkpointconfig.json", {"LocalPath": str(tree.base / "checkpoints")})
    running = LocalCluster([t.base for t in trees]).start()
    running.wait_for_output("algo-1", "[10]\t")
    for host in ("algo-1", "algo-2", "algo-3"):
        running.signal(host, signal.SIGTERM)
    results = running.wait(120)
    assert [r.returncode for r in results] == [0, 0, 0], _explain(results)
    rounds = xgb.Booster(model_file=str(trees[0].model_dir / "xgboost-model.ubj")).num_boosted_rounds()
    assert 10 < rounds < 4000
    assert f"stopping after round {rounds - 1}; checkpoint" in results[0].stderr
    for run in results[1:]:  # the same round on every host
        assert f"stopping after round {rounds - 1} (the leader writes the checkpoint)" in run.stderr
    checkpoints = sorted(p.name for p in (trees[0].base / "checkpoints").iterdir())
    assert (
        checkpoints[-1] == f"xgboost-checkpoint.{rounds}.ubj"
        or f"xgboost-checkpoint.{rounds}.ubj" in checkpoints
    )
    assert not list((trees[1].base / "checkpoints").iterdir()) and not list(
        (trees[2].base / "checkpoints").iterdir()
    )


def test_a_resumed_job_starts_every_host_from_the_leaders_checkpoint(tmp_path: Path) -> None:
    x, labels = _rows(7, 1000)
    trees = _job(
        tmp_path / "first",
        {"algorithm": "xgboost", "num_round": 6, "checkpoint_rounds": 3},
        "ShardedByS3Key",
        hosts=2,
    )
    for index, tree in enumerate(trees):
        tree.write_config("checkpointconfig.json", {"LocalPath": str(tree.base / "checkpoints")})
        tree.add_file(
            "train",
            "part.csv",
            _csv(x[index * 500 : (index + 1) * 500], labels[index * 500 : (index + 1) * 500]),
        )
    assert [r.returncode for r in _run(trees)] == [0, 0]
    saved = sorted(p.name for p in (trees[0].base / "checkpoints").iterdir())
    assert saved == ["xgboost-checkpoint.3.ubj", "xgboost-checkpoint.6.ubj"]
    assert not list((trees[1].base / "checkpoints").iterdir())  # only the leader writes them
    for tree in trees:
        tree.hyperparameters({**FAST, "algorithm": "xgboost", "num_round": 9, "checkpoint_rounds": 3})
    results = _run(trees)
    assert [r.returncode for r in results] == [0, 0], _explain(results)
    assert "resuming from the checkpoint sent by algo-1 (6 rounds done)" in results[1].stderr
    assert [line.split("\t")[0] for line in _metric_lines(results[0])] == ["[6]", "[7]", "[8]"]


def test_a_leader_that_starts_late_is_waited_for(tmp_path: Path) -> None:
    x, labels = _rows(8, 600)
    trees = _job(tmp_path, {"algorithm": "xgboost", "num_round": 3}, "ShardedByS3Key", hosts=2)
    for index, tree in enumerate(trees):
        tree.add_file(
            "train",
            "part.csv",
            _csv(x[index * 300 : (index + 1) * 300], labels[index * 300 : (index + 1) * 300]),
        )
    results = _run(trees, delays={"algo-1": 5.0})
    assert [r.returncode for r in results] == [0, 0], _explain(results)
    assert results[0].model_files


@pytest.mark.parametrize("distribution", ["ShardedByS3Key", "FullyReplicated"])
def test_the_forest_grows_its_trees_on_every_host(tmp_path: Path, distribution: str) -> None:
    """Each host grows its share of n_estimators on its rows; the leader merges them into one
    forest, which serves; the validation accuracy printed is the merged forest's, exactly."""
    x, labels = _rows(9, 3000)
    val_x, val_labels = _rows(10, 600)
    trees = _job(
        tmp_path / "job",
        {"algorithm": "random_forest", "n_estimators": 31, "random_state": 3},
        distribution,
        hosts=2,
        validation=True,
    )
    for index, tree in enumerate(trees):
        if distribution == "ShardedByS3Key":
            part = slice(index * 1500, (index + 1) * 1500)
            tree.add_file("train", "part.csv", _csv(x[part], labels[part]))
            vpart = slice(index * 300, (index + 1) * 300)
            tree.add_file("validation", "part.csv", _csv(val_x[vpart], val_labels[vpart]))
        else:
            for part in range(3):
                rows = slice(part * 1000, (part + 1) * 1000)
                tree.add_file("train", f"part-{part}.csv", _csv(x[rows], labels[rows]))
            tree.add_file("validation", "all.csv", _csv(val_x, val_labels))
    results = _run(trees)
    assert [r.returncode for r in results] == [0, 0], _explain(results)
    (line,) = _metric_lines(results[0])
    assert line.startswith("[31]\ttrain-accuracy:") and "oob-accuracy:" in line
    printed = float(line.split("validation-accuracy:")[1])
    served = _accuracy(trees[0].model_dir, val_x, val_labels)
    assert abs(printed - served) < 1e-5, (printed, served)
    assert served > 0.85
    one = _one_host(
        tmp_path, {"algorithm": "random_forest", "n_estimators": 31, "random_state": 3}, x, labels
    )
    assert abs(served - _accuracy(one.model_dir, val_x, val_labels)) <= 0.03


ONE_HOST_PLUGIN = """
    import json
    import numpy as np
    from sagecraft.hooks import AlgorithmInfo, hookimpl

    @hookimpl
    def algorithm_info():
        return AlgorithmInfo(description="the training set's mean label, on one host")

    @hookimpl
    def fit(train, hyperparameters):
        return {"mean": float(np.mean(train.labels)), "rows": train.n_rows}

    @hookimpl
    def save_model(model, model_dir):
        (model_dir / "mean.json").write_text(json.dumps(model))

    @hookimpl
    def load_model(model_dir):
        return json.loads((model_dir / "mean.json").read_text())

    @hookimpl
    def predict(model, features):
        return np.full(len(features), model["mean"])
"""


@pytest.mark.parametrize("distribution", ["FullyReplicated", "ShardedByS3Key"])
def test_a_plugin_that_declares_nothing_trains_on_the_first_host(tmp_path: Path, distribution: str) -> None:
    """FullyReplicated: the first host trains on every row; the others exit 0 without reading a
    byte (here their channel is not even CSV). ShardedByS3Key: every host fails, saying why."""
    site = install_test_plugin(
        tmp_path / "site", "mean-plugin", {"mean_label": "mean_label"}, {"mean_label": ONE_HOST_PLUGIN}
    )
    trees = _job(
        tmp_path / "job",
        {"algorithm": "mean_label"},
        distribution,
        validation=distribution != "FullyReplicated",
    )
    trees[0].add_file("train", "all.csv", "".join(f"{i},{i}\n" for i in range(100)))
    for tree in trees[1:]:
        tree.add_file("train", "all.csv", "\x00\x01 not csv at all\n")
    results = _run(trees, env={"PYTHONPATH": str(site)})
    if distribution == "FullyReplicated":
        assert [r.returncode for r in results] == [0, 0, 0], _explain(results)
        assert json.loads((trees[0].model_dir / "mean.json").read_text())["rows"] == 100
        for index in (1, 2):
            assert f"host algo-{index + 1} is not the first host (algo-1)" in results[index].stderr
            assert "reads no data" in results[index].stderr and not results[index].model_files
    else:
        assert [r.returncode for r in results] == [1, 1, 1], _explain(results)
        for run in results:
            assert (
                "algorithm 'mean_label' trains on one host, but channel 'train', 'validation' is "
                "ShardedByS3Key" in (run.failure or "")
            )


def test_a_host_that_never_joins_fails_the_others_within_the_bootstrap_timeout(tmp_path: Path) -> None:
    """resourceconfig.json lists algo-3, which never starts: the two that did wait for it until
    bootstrap_timeout, then fail saying the hosts did not all join, and exit 1 cleanly."""
    x, labels = _rows(13, 300)
    trees = _job(
        tmp_path, {"algorithm": "xgboost", "num_round": 3, "bootstrap_timeout": 8}, "ShardedByS3Key", hosts=2
    )
    for tree in trees:
        tree.add_file("train", "part.csv", _csv(x, labels))
    cluster = LocalCluster([t.base for t in trees])
    for tree, host in zip(trees, ("algo-1", "algo-2"), strict=True):
        tree.write_config(
            "resourceconfig.json", {"current_host": host, "hosts": ["algo-1", "algo-2", "algo-3"]}
        )
    began = time.monotonic()
    results = cluster.start().wait(120)
    assert time.monotonic() - began < 60
    assert [r.returncode for r in results] == [1, 1], _explain(results)
    for run in results:
        assert "the hosts did not all join within the bootstrap timeout" in (run.failure or ""), run.failure
        assert "algo-3 does not resolve: did it start?" in (run.failure or "")
        assert not run.model_files


def test_libsvm_shards_of_different_widths_agree_on_the_widest(tmp_path: Path) -> None:
    """A libsvm channel's width is its highest index: algo-2's shard mentions feature 5, the
    others stop at 2, and every host trains on six features (the rest missing)."""
    trees = _job(
        tmp_path, {"algorithm": "xgboost", "num_round": 3, "objective": "binary:logistic"}, "ShardedByS3Key"
    )
    for index, tree in enumerate(trees):
        tree.write_config(
            "inputdataconfig.json",
            {
                "train": {
                    "TrainingInputMode": "File",
                    "S3DistributionType": "ShardedByS3Key",
                    "ContentType": "libsvm",
                }
            },
        )
        last = 5 if index == 1 else 2
        lines = "".join(f"{i % 2} 0:{i % 7} 1:{(i * 3) % 5} {last}:{i % 2 + 0.5}\n" for i in range(200))
        tree.add_file("train", "part.libsvm", lines)
    results = _run(trees)
    assert [r.returncode for r in results] == [0, 0, 0], _explain(results)
    manifest = json.loads((trees[0].model_dir / "manifest.json").read_text())
    assert [f["name"] for f in manifest["features"]] == [f"f{i}" for i in range(6)]


def test_kfold_is_refused_with_several_instances(tmp_path: Path) -> None:
    """Cross-validation needs every row on one host: refused before any host joins or reads."""
    x, labels = _rows(15, 100)
    tree = _job(tmp_path, {"algorithm": "xgboost", "kfold": 3}, "FullyReplicated", hosts=1)[0]
    tree.write_config("resourceconfig.json", {"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]})
    tree.add_file("train", "all.csv", _csv(x, labels))
    result = tree.train(timeout=60)
    assert result.returncode == 1
    assert "kfold cross-validates on one host, but this job has 2 instances" in (tree.failure or "")
