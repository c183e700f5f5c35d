"""The matrices XGBoost trains on, chosen by the tree method, the data and the job's memory.

- Tree methods that train on histograms (`hist`, the default) get a `QuantileDMatrix`: values
  binned once, a byte each, the same model to the bit as from a `DMatrix`. From a streamed
  channel (`Dataset.stream`) it is built from an iterator over the batches, which XGBoost reads
  a few times; the raw values are never held whole.
- `ExtMemQuantileDMatrix` when the binned matrix would not fit the memory the job's data may use
  (`FitContext.data_memory_bytes`), or when `external_memory=true`: its pages live in a cache
  in the scratch folder and are read back each round. The same model again (tested bit for bit).
- `exact`, `approx` and `gblinear` need the raw values in memory: a `DMatrix` (from a stream,
  its batches concatenated into one float32 matrix).
The validation matrix always takes the training matrix's bins (`ref`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

import xgboost as xgb
from sagecraft.errors import HyperparameterError
from sagecraft.hooks import Batch, Dataset, FitContext

# The tree methods that train on histograms, which QuantileDMatrix holds already binned (a byte a
# value for up to 256 bins, against the raw float32 copy a DMatrix keeps). exact, approx and
# gblinear need the raw values.
HISTOGRAM_METHODS = (None, "auto", "hist")
# What a QuantileDMatrix holds in memory per value, measured on 4,000,000 x 128 float32 values
# (binned values, row pointers, the sketch): the estimate the automatic choice compares.
BINNED_BYTES_PER_VALUE = 3.2
# Rows per batch when an in-memory dataset goes through the iterator (external_memory=true).
IN_MEMORY_BATCH_ROWS = 1 << 16
AUTO, ON, OFF = "auto", "true", "false"


class _Batches(xgb.DataIter):
    """XGBoost's iterator over a dataset's batches (read again from the start on each reset)."""

    def __init__(self, batches: Callable[[], Iterator[Any]], names: list[str], cache_prefix: str | None):
        self._batches = batches
        self._names = names
        self._iterator: Iterator[Any] = batches()
        super().__init__(cache_prefix=cache_prefix, release_data=True)

    def next(self, input_data: Callable[..., None]) -> bool:
        batch = next(self._iterator, None)
        if batch is None:
            return False
        if isinstance(batch.features, pd.DataFrame):  # an in-memory dataset's slice: its own names
            input_data(data=batch.features, label=batch.labels, weight=batch.weights)
        else:
            input_data(
                data=batch.features,
                label=batch.labels,
                weight=batch.weights,
                feature_names=self._names,
                feature_types=["float"] * len(self._names),
            )
        return True

    def reset(self) -> None:
        self._iterator = self._batches()


def _slices(data: Dataset) -> Callable[[], Iterator[Batch]]:
    def batches() -> Iterator[Batch]:
        for start in range(0, max(data.n_rows, 1), IN_MEMORY_BATCH_ROWS):
            rows = slice(start, start + IN_MEMORY_BATCH_ROWS)
            weights = None if data.weights is None else data.weights[rows]
            yield Batch(data.features.iloc[rows], data.labels[rows], weights)

    return batches


def _source(data: Dataset) -> Callable[[], Iterator[Batch]]:
    return data.stream.batches if data.stream is not None else _slices(data)


def binned_bytes(data: Dataset) -> int:
    """The estimated size of the dataset as a QuantileDMatrix."""
    return int(data.n_rows * len(data.features.columns) * BINNED_BYTES_PER_VALUE)


def external_memory(setting: str, train: Dataset, validation: Dataset | None, context: FitContext) -> bool:
    """Whether to train from external memory: as `setting` says, or (auto) when the binned
    matrices would pass the memory the job's data may use."""
    if setting != AUTO:
        return setting == ON
    needed = binned_bytes(train) + (binned_bytes(validation) if validation is not None else 0)
    chosen = needed > context.data_memory_bytes
    if chosen:
        context.logger.info(
            f"external memory: the binned matrices would take about {needed / 2**20:,.0f} MiB, over "
            f"the {context.data_memory_bytes / 2**20:,.0f} MiB this job's data may use; their pages "
            "are cached on the scratch disk (external_memory=false keeps them in memory)"
        )
    return chosen


def matrices(
    train: Dataset,
    validation: Dataset | None,
    params: dict[str, Any],
    setting: str,
    context: FitContext,
) -> list[tuple[xgb.DMatrix, str]]:
    """The training matrix and the validation one, which takes the training matrix's bins."""
    binned = params.get("tree_method") in HISTOGRAM_METHODS and params.get("booster", "gbtree") != "gblinear"
    if not binned:
        if setting == ON:
            method = (
                "booster=gblinear"
                if params.get("booster") == "gblinear"
                else f"tree_method={params.get('tree_method')}"
            )
            raise HyperparameterError(
                f"external_memory=true trains from histograms (tree_method=hist); {method} needs "
                "the raw values in memory"
            )
        evals = [(_raw(train), "train")]
        if validation is not None:
            evals.append((_raw(validation), "validation"))
        return evals
    external = external_memory(setting, train, validation, context)
    max_bin = params.get("max_bin")
    evals = [(_binned(train, "train", external, max_bin, None, context), "train")]
    if validation is not None:
        evals.append(
            (_binned(validation, "validation", external, max_bin, evals[0][0], context), "validation")
        )
    return evals


def _binned(
    data: Dataset,
    name: str,
    external: bool,
    max_bin: int | None,
    ref: xgb.DMatrix | None,
    context: FitContext,
) -> xgb.DMatrix:
    if external:
        if context.scratch_dir is None:
            raise HyperparameterError("external memory needs a scratch folder, and this job has none")
        cache = context.scratch_dir / "xgboost-cache"
        cache.mkdir(parents=True, exist_ok=True)
        iterator = _Batches(_source(data), list(data.features.columns), str(cache / name))
        return xgb.ExtMemQuantileDMatrix(iterator, max_bin=max_bin, ref=ref, enable_categorical=True)
    if data.stream is None:
        return xgb.QuantileDMatrix(
            data.features,
            label=data.labels,
            weight=data.weights,
            enable_categorical=True,
            ref=ref,
            max_bin=max_bin,
        )
    iterator = _Batches(data.stream.batches, list(data.features.columns), None)
    return xgb.QuantileDMatrix(iterator, max_bin=max_bin, ref=ref)


def _raw(data: Dataset) -> xgb.DMatrix:
    if data.stream is None:
        return xgb.DMatrix(data.features, label=data.labels, weight=data.weights, enable_categorical=True)
    features, labels, weights = [], [], []
    for batch in data.stream.batches():
        features.append(np.asarray(batch.features))
        labels.append(batch.labels)
        if batch.weights is not None:
            weights.append(batch.weights)
    return xgb.DMatrix(
        np.concatenate(features),
        label=np.concatenate(labels),
        weight=np.concatenate(weights) if weights else None,
        feature_names=list(data.features.columns),
        feature_types=["float"] * len(data.features.columns),
    )
