"""The training report: `output/data/report/report.html` and its PNG figures, for a person to look at.

Written after the model is saved, from what the job already has: the metric lines it printed (a
table, and a learning curve when there are rounds), and the saved model loaded back through its
plugin and asked to predict the validation rows (else the training rows): a confusion matrix or a
residual plot, and permutation feature importance (how much the metric worsens when one feature's
values are shuffled), which works for any plugin. Figures are drawn with matplotlib's Figure API
(its Agg renderer, no pyplot).
"""

from __future__ import annotations

import base64
import html
import importlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..metrics import DEFAULT_METRIC, evaluate
from ..model_types import CLASSIFICATION, LABEL, Dataset, ReportSection
from ..plugins import Algorithm

log = logging.getLogger(__name__)

MAX_ROWS = 5000  # rows scored for the figures; a sample keeps the report quick on large data
MAX_FEATURES = 25  # features shown in the importance figure (4 times as many permuted at most)
MAX_CLASSES = 30  # classes in the confusion matrix: the most frequent, the rest as "other"
# The report is an extra: it gets this long after the model is saved, whatever the data's size
# (3,000 classes took 280 s and 15 GB for one confusion figure before it was bounded).
TIME_BUDGET_S = 120.0
SEED = 0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SECTION_FIGURE_BYTES = 10 << 20


class ReportStopped(Exception):
    """SIGTERM arrived while the report was being written: the model is saved; the report is not."""


@dataclass
class MetricHistory:
    """Every metric line the job printed (the trainer's `log_metrics` prints a line, then records
    it here), for the report's learning curve."""

    rounds: list[int] = field(default_factory=list)
    lines: list[dict[str, float]] = field(default_factory=list)

    def record(self, iteration: int, metrics: Mapping[str, float]) -> None:
        self.rounds.append(iteration)
        self.lines.append(dict(metrics))

    def series(self) -> dict[str, tuple[list[int], list[float]]]:
        found: dict[str, tuple[list[int], list[float]]] = {}
        for iteration, line in zip(self.rounds, self.lines, strict=True):
            for name, value in line.items():
                xs, ys = found.setdefault(name, ([], []))
                xs.append(iteration)
                ys.append(value)
        return found

    def last(self) -> dict[str, float]:
        """The latest value of each metric (cross-validation's lines included)."""
        latest: dict[str, float] = {}
        for line in self.lines:
            latest.update(line)
        return latest


def _sample(data: Dataset) -> Dataset:
    if data.n_rows <= MAX_ROWS:
        return data
    rows = np.random.default_rng(SEED).choice(data.n_rows, MAX_ROWS, replace=False)
    return Dataset(data.features.iloc[rows], data.labels[rows])


def _score(task: str, labels: np.ndarray, predicted: np.ndarray) -> float:
    """Higher is better: the task's default metric (accuracy), or minus it (the RMSE)."""
    if task != CLASSIFICATION:
        predicted = predicted.astype(float)
    name = DEFAULT_METRIC[task]
    value = evaluate(task, [name], labels, predicted)[name]
    return value if task == CLASSIFICATION else -value


def permutation_importance(
    algorithm: Algorithm,
    model: object,
    data: Dataset,
    task: str,
    deadline: float = math.inf,
    stop_requested: Callable[[], bool] = lambda: False,
) -> pd.Series:
    """How much the score falls when each feature's values are shuffled, largest first: for at
    most 4 x MAX_FEATURES features, and those reached before `deadline` (time.monotonic())."""
    baseline = _score(task, data.labels, np.asarray(algorithm.predict(model, data.features, LABEL)))
    rng = np.random.default_rng(SEED)
    drops: dict[str, float] = {}
    candidates = list(data.features.columns)[: MAX_FEATURES * 4]
    for name in candidates:
        if stop_requested():
            raise ReportStopped
        if time.monotonic() > deadline:
            log.warning(
                "training report: permutation importance covers %d of %d features (its time is up)",
                len(drops),
                len(candidates),
            )
            break
        # A shallow copy: only the shuffled column is new (the others are shared, copy-on-write).
        shuffled = data.features.copy(deep=False)
        # Shuffled as the column it is: a categorical feature stays categorical (through numpy it
        # became text, which XGBoost refuses).
        column = shuffled[name]
        shuffled[name] = column.take(rng.permutation(len(column))).set_axis(column.index)
        predicted = np.asarray(algorithm.predict(model, shuffled, LABEL))
        drops[str(name)] = baseline - _score(task, data.labels, predicted)
    return pd.Series(drops).sort_values(ascending=False)


def start_loading_matplotlib() -> threading.Thread:
    """Import matplotlib in the background while the model fits: the import takes about half a
    second, which a job would otherwise spend waiting at its end."""
    thread = threading.Thread(
        target=lambda: importlib.import_module("matplotlib.figure"), name="import-matplotlib", daemon=True
    )
    thread.start()
    return thread


def _figure(path: Path, draw: Callable[[Any], None]) -> Path:
    # The object-oriented API without pyplot: no global figure state, no GUI backend chosen.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), dpi=100)
    draw(figure.subplots())
    figure.tight_layout()
    figure.savefig(path)
    return path


def _learning_curve(history: MetricHistory, folder: Path) -> Path | None:
    series = {n: s for n, s in history.series().items() if not n.startswith("cv-") and len(s[0]) > 1}
    if not series:
        return None

    def draw(axes: Any) -> None:
        for name, (xs, ys) in sorted(series.items()):
            axes.plot(xs, ys, label=name)
        axes.set_xlabel("round")
        axes.set_ylabel("metric")
        axes.set_title("Learning curve")
        axes.legend()

    return _figure(folder / "learning-curve.png", draw)


def _importance_figure(importance: pd.Series, folder: Path) -> Path:
    shown = importance.head(MAX_FEATURES)[::-1]

    def draw(axes: Any) -> None:
        axes.barh(list(shown.index), list(shown.to_numpy()))
        axes.set_xlabel("score lost when the feature is shuffled")
        axes.set_title("Permutation feature importance")

    return _figure(folder / "feature-importance.png", draw)


def _confusion_figure(
    labels: np.ndarray, predicted: np.ndarray, classes: list[str], folder: Path
) -> tuple[Path, np.ndarray]:
    """Actual against predicted classes: the MAX_CLASSES most frequent actual classes, any other
    counted as "other", so that the figure stays readable and small whatever the class count."""
    labels, predicted = labels.astype(int), predicted.astype(int)
    if len(classes) > MAX_CLASSES:
        kept = np.argsort(-np.bincount(labels, minlength=len(classes)), kind="stable")[: MAX_CLASSES - 1]
        position = np.full(len(classes), MAX_CLASSES - 1)
        position[kept] = np.arange(len(kept))
        labels, predicted = position[labels], position[predicted]
        classes = [classes[i] for i in kept] + [f"other ({len(classes) - len(kept):,} classes)"]
    k = len(classes)
    matrix = np.zeros((k, k), dtype=int)
    np.add.at(matrix, (labels, predicted), 1)

    def draw(axes: Any) -> None:
        axes.imshow(matrix, cmap="Blues")
        axes.set_xticks(range(k), classes, rotation=45, ha="right")
        axes.set_yticks(range(k), classes)
        axes.set_xlabel("predicted")
        axes.set_ylabel("actual")
        axes.set_title("Confusion matrix")
        for (i, j), count in np.ndenumerate(matrix):
            axes.text(j, i, str(count), ha="center", va="center")

    return _figure(folder / "confusion-matrix.png", draw), matrix


def _residual_figure(labels: np.ndarray, predicted: np.ndarray, folder: Path) -> Path:
    def draw(axes: Any) -> None:
        axes.scatter(predicted, labels - predicted, s=6, alpha=0.5)
        axes.axhline(0, color="grey", linewidth=1)
        axes.set_xlabel("predicted")
        axes.set_ylabel("actual - predicted")
        axes.set_title("Residuals")

    return _figure(folder / "residuals.png", draw)


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"></figure>'


def _section(section: ReportSection) -> str:
    """A plugin's section: its text escaped, its figure inlined only if it is a PNG of bounded size
    (the plugin's file; a bad one is left out and logged, never fails the report)."""
    paragraphs = "".join(
        f"<p>{html.escape(part.strip())}</p>" for part in section.text.split("\n\n") if part.strip()
    )
    figure = ""
    if section.figure is not None:
        try:
            with open(section.figure, "rb") as file:
                data = file.read(MAX_SECTION_FIGURE_BYTES + 1)
        except OSError as exc:
            log.warning("report section %r: its figure cannot be read: %s", section.title, exc)
        else:
            if len(data) > MAX_SECTION_FIGURE_BYTES or not data.startswith(PNG_SIGNATURE):
                log.warning("report section %r: its figure is not a PNG of at most 10 MB", section.title)
            else:
                figure = f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}">'
    return f"<h2>{html.escape(section.title)}</h2>{paragraphs}{figure}"


def write_report(
    folder: Path,
    *,
    algorithm: Algorithm,
    model: Any,
    task: str,
    classes: list[str],
    history: MetricHistory,
    evaluation: Dataset,
    evaluation_name: str,
    stop_requested: Callable[[], bool] = lambda: False,
    sections: Sequence[ReportSection] = (),
) -> Path:
    """Draw the figures and write report.html (figures inlined, so the page stands alone).
    `model` is the saved model as the plugin loaded it back. Bounded whatever the data: MAX_ROWS
    rows, MAX_CLASSES classes, 4 x MAX_FEATURES permuted features within TIME_BUDGET_S; raises
    ReportStopped once `stop_requested` says so."""
    deadline = time.monotonic() + TIME_BUDGET_S
    log.info("writing the training report")
    folder.mkdir(parents=True, exist_ok=True)
    sample = _sample(evaluation)
    predicted = np.asarray(algorithm.predict(model, sample.features, LABEL))
    if stop_requested():
        raise ReportStopped
    figures = [p for p in [_learning_curve(history, folder)] if p is not None]
    if task == CLASSIFICATION:
        figure, _ = _confusion_figure(sample.labels, predicted, [str(c) for c in classes], folder)
    else:
        figure = _residual_figure(sample.labels.astype(float), predicted.astype(float), folder)
    figures.append(figure)
    importance = permutation_importance(algorithm, model, sample, task, deadline, stop_requested)
    figures.append(_importance_figure(importance, folder))
    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{v:.6g}</td></tr>" for n, v in history.last().items())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>sagecraft training report</title>
<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2rem .6rem}}
img{{max-width:100%}}</style></head><body>
<h1>Training report: {html.escape(algorithm.name)} ({html.escape(task)})</h1>
<p>Figures from {len(sample.labels)} {html.escape(evaluation_name)} rows.</p>
<h2>Metrics (latest values)</h2><table><tr><th>metric</th><th>value</th></tr>{rows}</table>
<h2>Figures</h2>{"".join(_image(p) for p in figures)}
{"".join(_section(section) for section in sections)}
</body></html>
"""
    path = folder / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
