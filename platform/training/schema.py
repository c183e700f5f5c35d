"""A channel's schema, agreed by every host before any matrix is built.

Each host reads only its share of a channel (sharding.py), so no host alone knows the job's
columns, categories or classes: a class can sit on one shard only, a libsvm shard be narrower, a
host have no rows at all. Here the hosts exchange what they read and settle, the same on every
host: the format and columns (which must match, a libsvm or RecordIO width being the widest),
the categorical features (text on any host makes a feature categorical on all), whether rows
carry weights, then the task, the classes (a union) and the categories (unions). `conform` then
shapes each host's table to the agreed schema, building an empty one for a host without rows.
On a one-host job the agreed schema is the table's own, and `conform` leaves the table as it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .. import categories
from ..cluster import Cluster
from ..errors import ClusterError, DataError
from ..media_types import short_name
from ..model_types import CLASSIFICATION, REGRESSION
from .agreement import job_wide, together
from .combine import ChannelTable
from .data import POSITIONAL
from .labels import LabelEncoding, distinct_labels, is_numeric


@dataclass(frozen=True)
class ChannelSchema:
    """What every host agreed about one channel."""

    rows: int  # across every host
    format: str
    columns: list[str]
    text_columns: list[str]
    weighted: bool
    numeric_labels: bool
    cast_numbers: bool  # the hosts read some numeric column as different types: all as floats


def _local(table: ChannelTable | None) -> dict[str, Any]:
    if table is None:
        return {"rows": 0}
    features = table.features
    return {
        "rows": len(features),
        "format": table.format,
        "columns": [str(c) for c in features.columns],
        "text": [str(c) for c in features.columns if features[c].dtype.kind not in "biuf"],
        "dtypes": {str(c): str(t) for c, t in features.dtypes.items() if t.kind in "biuf"},
        "weighted": table.weights is not None,
        "numeric_labels": is_numeric(table.labels),
    }


def agree_channel(cluster: Cluster, channel: str, table: ChannelTable | None) -> ChannelSchema:
    """The channel's schema, the same on every host; DataError when no host has a row of it,
    ClusterError naming the hosts when their formats or columns differ."""
    cluster.stage = f"while agreeing on the '{channel}' channel's columns"
    held = [
        (host, value) for host, value in zip(cluster.hosts, cluster.gather_json(_local(table)), strict=True)
    ]
    present = [(host, value) for host, value in held if value["rows"]]
    if not present:
        raise job_wide(
            DataError(f"the '{channel}' channel holds no rows on any of the job's {cluster.size} hosts")
        )
    first = present[0][1]
    formats = {short_name(value["format"]) for _, value in present}
    if len(formats) > 1:
        raise ClusterError(
            f"the hosts' '{channel}' channels hold different formats: "
            + "; ".join(f"{host}: {short_name(value['format'])}" for host, value in present)
        )
    if first["format"] in POSITIONAL:
        width = max(len(value["columns"]) for _, value in present)
        columns = [f"f{i}" for i in range(width)]
    else:
        columns = first["columns"]
        if any(value["columns"] != columns for _, value in present):
            groups: dict[str, list[str]] = {}
            for host, value in present:
                groups.setdefault(", ".join(value["columns"]), []).append(host)
            raise ClusterError(
                f"the hosts' '{channel}' channels have different columns: "
                + "; ".join(f"{', '.join(hosts)}: {shown}" for shown, hosts in groups.items())
                + ". Every file of a channel must have the same columns"
            )
    text = {name for _, value in present for name in value["text"]}
    dtypes = {(name, kind) for _, value in present for name, kind in value["dtypes"].items()}
    return ChannelSchema(
        rows=sum(value["rows"] for _, value in present),
        format=first["format"],
        columns=columns,
        text_columns=[name for name in columns if name in text],
        weighted=any(value["weighted"] for _, value in present),
        numeric_labels=all(value["numeric_labels"] for _, value in present),
        cast_numbers=len(dtypes) > len({name for name, _ in dtypes}),
    )


def conform(
    table: ChannelTable | None, schema: ChannelSchema, feature_dtype: str, cluster: Cluster
) -> ChannelTable:
    """`table` shaped to the agreed schema: the agreed columns, categorical features as text,
    weights when any host has them; an empty table for a host with no rows. A one-host table
    already is its schema and comes back unchanged."""
    if table is None:
        features = pd.DataFrame(
            {
                name: pd.Series([], dtype=object if name in schema.text_columns else feature_dtype)
                for name in schema.columns
            }
        )
        labels = pd.Series([], dtype=np.float64 if schema.numeric_labels else object)
        weights = pd.Series([], dtype=np.float32) if schema.weighted else None
        return ChannelTable(features, labels, weights, schema.format)
    if cluster.size == 1:
        return table
    features = table.features
    if list(features.columns) != schema.columns:  # a narrower libsvm or RecordIO shard
        features = features.reindex(columns=schema.columns)
    features = features.copy(deep=False)
    for name in features.columns:
        column = features[name]
        if name in schema.text_columns and column.dtype.kind in "biuf":
            features[name] = pd.Series(
                [categories.as_text(v) for v in column.to_numpy(dtype=object)],
                index=column.index,
                dtype=object,
            )
        elif schema.cast_numbers and column.dtype.kind in "biuf":
            features[name] = column.astype(feature_dtype)
    weights = table.weights
    if schema.weighted and weights is None:
        weights = pd.Series(np.ones(len(features), dtype=np.float32), index=features.index)
    return dataclasses.replace(table, features=features, weights=weights)


def agree_task(given: str | None, schema: ChannelSchema) -> str:
    """The task: the one given (hyperparameter `task`, or the algorithm's objective), else
    classification unless every host read numeric labels (as R's randomForest decides)."""
    if given:
        return given
    return REGRESSION if schema.numeric_labels else CLASSIFICATION


def agree_labels(cluster: Cluster, task: str, labels: pd.Series) -> LabelEncoding:
    """The label encoding of the train channel: for classification, the union of every host's
    classes. Raised on every host: a host's labels that do not fit the task."""
    if task == REGRESSION:
        return together(cluster, "while reading the labels", lambda: LabelEncoding.fit(REGRESSION, labels))
    classes = together(cluster, "while reading the labels", lambda: distinct_labels(labels))
    union = [value for held in cluster.gather_json(classes) for value in held]
    try:
        return LabelEncoding.of_classes(task, union)
    except DataError as exc:
        raise job_wide(exc) from None


def agree_levels(cluster: Cluster, features: pd.DataFrame) -> dict[str, list[str]]:
    """The categories of each categorical feature: the union of every host's."""
    local = categories.levels(features)
    if cluster.size == 1:
        return local
    merged: dict[str, set[str]] = {}
    for held in cluster.gather_json(local):
        for name, values in held.items():
            merged.setdefault(name, set()).update(values)
    return {name: sorted(merged[name]) for name in features.columns if name in merged}
