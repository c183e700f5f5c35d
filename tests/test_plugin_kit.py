"""What a plugin is told and can tell: `sagecraft metrics ALGORITHM` (MetricDefinitions for a
tuning job), `sagecraft plugins --json`, the plugin's artefacts folder under output/data/ and its
sections of the training report, through the real `sagecraft` processes."""

from __future__ import annotations

import json
import re
import subprocess
import zlib
from pathlib import Path

import pytest

from sagemaker_tree import SAGECRAFT, TrainingTree, environment, install_test_plugin, regression_rows


def _png() -> bytes:
    """A valid 1x1 PNG, written by hand (no drawing library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


REPORTING = f"""
    import json
    import numpy as np
    from sagecraft.hooks import AlgorithmInfo, hookimpl

    PNG = {_png()!r}

    @hookimpl
    def algorithm_info():
        return AlgorithmInfo(description="the mean, with a report of its own", metrics=["rmse"],
                             metric_channels=["train"], api_version=6)

    @hookimpl
    def fit(train, hyperparameters, context):
        mean = float(np.mean(train.labels))
        (context.artefacts_dir / "summary.json").write_text(json.dumps({{"mean": mean}}))
        (context.artefacts_dir / "spread.png").write_bytes(PNG)
        (context.artefacts_dir / "fake.png").write_text("<script>not a png</script>")
        context.add_report_section("The mean <b>model</b>", "It predicts the mean.\\n\\nNothing else.",
                                   context.artefacts_dir / "spread.png")
        context.add_report_section("A figure that is not one", "", context.artefacts_dir / "fake.png")
        context.log_metrics(0, {{"train-rmse": float(np.std(train.labels))}})
        return {{"mean": mean}}

    @hookimpl
    def save_model(model, model_dir):
        (model_dir / "mean.json").write_text(json.dumps(model))

    @hookimpl
    def load_model(model_dir):
        return json.loads((model_dir / "mean.json").read_text())

    @hookimpl
    def predict(model, features, output):
        return np.full(len(features), model["mean"])
"""


def _site(tmp_path: Path) -> Path:
    return install_test_plugin(
        tmp_path / "site", "mean-plugin", {"mean": "mean_plugin"}, {"mean_plugin": REPORTING}
    )


def _sagecraft(tmp_path: Path, site: Path | None, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SAGECRAFT, *args], env=environment(tmp_path, site), capture_output=True, text=True, timeout=120
    )


def test_metric_definitions_read_the_lines_the_core_prints(tmp_path: Path) -> None:
    result = _sagecraft(tmp_path, None, "metrics", "xgboost")
    assert result.returncode == 0, result.stderr
    definitions = {d["Name"]: d["Regex"] for d in json.loads(result.stdout)}
    assert {"validation:auc", "train:rmse", "validation:f1", "validation:accuracy"} <= set(definitions)
    # A metric line as CloudWatch shows it (the tab as #011)
    logged = "[12]#011train-rmse:0.4312#011validation-auc:0.9731#011validation-f1:5e-01"
    assert re.match(definitions["validation:auc"], logged).group(1) == "0.9731"  # type: ignore[union-attr]
    assert re.match(definitions["train:rmse"], logged).group(1) == "0.4312"  # type: ignore[union-attr]
    assert re.match(definitions["validation:f1"], logged).group(1) == "5e-01"  # type: ignore[union-attr]
    assert re.match(definitions["validation:rmse"], logged) is None
    forest = {d["Name"] for d in json.loads(_sagecraft(tmp_path, None, "metrics", "random_forest").stdout)}
    assert {"oob:accuracy", "train:accuracy", "validation:r2"} <= forest


def test_metric_definitions_of_a_plugin_and_the_errors(tmp_path: Path) -> None:
    site = _site(tmp_path)
    result = _sagecraft(tmp_path, site, "metrics", "mean")
    assert json.loads(result.stdout) == [
        {
            "Name": "train:rmse",
            "Regex": r".*\[[0-9]+\].*#011train-rmse:([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)",
        }
    ]
    unknown = _sagecraft(tmp_path, site, "metrics", "nope")
    assert unknown.returncode == 2 and "unknown algorithm 'nope'" in unknown.stderr


def test_plugins_as_json_say_what_each_algorithm_declares(tmp_path: Path) -> None:
    entries = {
        e["name"]: e for e in json.loads(_sagecraft(tmp_path, _site(tmp_path), "plugins", "--json").stdout)
    }
    assert entries["xgboost"]["algorithm"]["checkpoints"] is True
    assert entries["xgboost"]["algorithm"]["several_hosts"] is True
    assert entries["random_forest"]["algorithm"]["checkpoints"] is False
    assert entries["mean"]["distribution"] == "mean-plugin"
    assert entries["mean"]["algorithm"]["metrics"] == ["rmse"]


@pytest.mark.usefixtures("with_report")
def test_a_plugin_writes_artefacts_and_report_sections(tmp_path: Path) -> None:
    site = _site(tmp_path)
    tree = TrainingTree(tmp_path / "job", pythonpath=site)
    tree.add_file("train", "d.csv", regression_rows(0, 60))
    tree.hyperparameters({"algorithm": "mean"})
    assert tree.train().returncode == 0, tree.explain()
    output = tree.base / "output" / "data"
    assert json.loads((output / "mean" / "summary.json").read_text())["mean"] != 0
    page = (output / "report" / "report.html").read_text()
    assert (
        "<h2>The mean &lt;b&gt;model&lt;/b&gt;</h2><p>It predicts the mean.</p><p>Nothing else.</p>" in page
    )
    images = re.findall(r'<img src="data:image/png;base64,[^"]+">', page)
    assert len(images) == 1  # the PNG is inlined; the file that is not a PNG is left out
    assert "<h2>A figure that is not one</h2>" in page and "<script>" not in page
    assert tree.result is not None and "is not a PNG" in tree.result.stderr
