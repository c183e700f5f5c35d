"""The channel combiner: the tables read from a channel's files become one ChannelTable.

Three steps, each once: `ColumnRoles.decide` says which column is the label, which the weight and
which are features, and what the features are called in the model (header-less CSV features are
`f0, f1, ...` counted after the label and weight are split off, as in requests); `check_files`
refuses files that disagree or hold features of the wrong kind, naming features as the model
does; `combine` assembles the table and checks what only the whole channel shows (labels or
weights missing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ..errors import DataError
from ..media_types import CSV, LIBSVM, RECORDIO
from . import formats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChannelTable:
    """One channel's rows: features (columns named as the model knows them), raw labels, optional
    weights, and the channel's format (a media type, see sagecraft.media_types)."""

    features: pd.DataFrame
    labels: pd.Series
    weights: pd.Series | None = None
    format: str = CSV


@dataclass(frozen=True)
class ReadFile:
    """One file of a channel as its reader gave it."""

    path: Path
    format: str
    table: pa.Table


@dataclass(frozen=True)
class ColumnRoles:
    """What each column of a channel's files is."""

    columns: list[str]  # every column, as the files name them
    label: str
    weight: str | None
    features: list[str]  # as the files name them
    names: list[str]  # the same features as the model names them

    @classmethod
    def decide(cls, first: ReadFile, *, target: str | None, header: bool, csv_weights: bool) -> ColumnRoles:
        """The roles, from the first file's columns and the job's conventions (see data.py)."""
        columns = first.table.column_names
        if target is not None and target not in columns:
            raise DataError(
                f"target column '{target}' is not in {first.path}; its columns are: {', '.join(columns)}"
            )
        label = target if target is not None else columns[0]
        weight = None
        if csv_weights:
            if target is not None or first.format != CSV:
                raise DataError(
                    "csv_weights=1 reads weights from the second column of label-first CSV "
                    "files; remove 'target' or csv_weights"
                )
            if len(columns) < 3:
                raise DataError(f"{first.path}: csv_weights=1 needs a label, a weight and features")
            weight = columns[1]
        if len(columns) < 2:
            raise DataError(f"{first.path} has {len(columns)} column; a label and features are needed")
        if first.format in (LIBSVM, RECORDIO) and formats.WEIGHT in columns:
            weight = formats.WEIGHT  # from libsvm's `label:weight`
        features = [c for c in columns if c not in (label, weight)]
        headerless = first.format == CSV and not header
        names = [f"f{i}" for i in range(len(features))] if headerless else features
        return cls(columns, label, weight, features, names)

    def describe(self, fmt: str, header: bool) -> str:
        """How the files are laid out, for the log."""
        if fmt == CSV:
            layout = f"header row, label '{self.label}'" if header else "no header, label in the first column"
        elif fmt == LIBSVM:
            layout = formats.LIBSVM_INDEX_NOTE.split(",")[0]
        elif fmt == RECORDIO:
            layout = "each record's label, features f0, f1, ... by position"

        else:
            layout = f"label '{self.label}'"
        return layout + (", weights in the second column" if self.weight else "")


def check_files(read: list[ReadFile], roles: ColumnRoles) -> None:
    """Every file has the first file's columns, and its features and weights are numbers or text
    (categories); DataError naming the file, the feature (as the model names it) and the row."""
    first = read[0]
    numeric = list(zip(roles.features, roles.names, strict=True))
    if roles.weight is not None:
        numeric.append((roles.weight, roles.weight))
    for file in read:
        if file.table.column_names != roles.columns:
            raise DataError(
                f"{file.path} has columns ({', '.join(file.table.column_names)}) that differ from "
                f"{first.path} ({', '.join(roles.columns)}); every file of a channel needs the same columns"
            )
        for column, name in numeric:
            _check_kind(file.table.column(column), name, file.path)


def _check_kind(column: pa.ChunkedArray, name: str, path: Path) -> None:
    """Numbers, or text (a categorical feature); nothing else (dates, lists, ...)."""
    kind = column.type
    if (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_null(kind)
        or pa.types.is_boolean(kind)
        or formats.is_text(kind)
    ):
        return
    values = column.to_pylist()
    bad = next(((i, v) for i, v in enumerate(values) if v is not None and not is_number(str(v))), None)
    where = f": row {bad[0] + 1} holds {bad[1]!r}" if bad else ""
    raise DataError(
        f"feature column '{name}' in {path} is not numeric{where}. Features must be numbers "
        "(empty cells are missing values)"
    )


def is_number(text: str) -> bool:
    """Whether a CSV cell is a number or empty (a missing value)."""
    text = text.strip()
    if text == "":
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_categorical(values: pd.Series, name: str, channel: str) -> None:
    """A text column is categorical, unless it is mostly numbers: then its text is a mistake."""
    present = values.dropna()
    present = present[present.str.strip() != ""]
    numeric = pd.to_numeric(present, errors="coerce").notna()
    if len(present) and numeric.mean() >= 0.5:
        row = int(numeric.to_numpy().argmin())
        raise DataError(
            f"feature column '{name}' in the '{channel}' channel is not numeric: it holds "
            f"{present.iloc[row]!r} among numbers. Features must be numbers (empty cells are "
            "missing values) or text categories"
        )


def combine(read: list[ReadFile], roles: ColumnRoles, *, channel: str) -> ChannelTable:
    """One table of every file's rows, checked (`check_files` first)."""
    combined = pa.concat_tables([file.table for file in read], promote_options="permissive")
    for column, name in zip(roles.features, roles.names, strict=True):
        if formats.is_text(combined.column(column).type):
            _check_categorical(combined.column(column).to_pandas(), name, channel)
    labels = combined.column(roles.label).to_pandas()
    missing = int(labels.isna().sum())
    if missing:
        raise DataError(f"the '{channel}' channel has {missing} row(s) with no label")
    weights = combined.column(roles.weight).to_pandas() if roles.weight else None
    if weights is not None and (weights.isna().any() or (weights < 0).any()):
        raise DataError(f"the '{channel}' channel has missing or negative weights")
    return ChannelTable(_features(combined, roles), labels, weights, read[0].format)


def _features(table: pa.Table, roles: ColumnRoles) -> pd.DataFrame:
    """The feature columns as a DataFrame. Numbers of one float type become one column-major
    block, filled a column at a time (the fit then reads it without another copy: numpy sees
    it as a Fortran-ordered matrix); otherwise one block per column (text, mixed types)."""
    types = {table.column(name).type for name in roles.features}
    if len(types) == 1 and pa.types.is_floating(next(iter(types))) and table.num_rows:
        dtype = next(iter(types)).to_pandas_dtype()
        block = np.empty((len(roles.features), table.num_rows), dtype=dtype)
        for index, name in enumerate(roles.features):
            block[index] = table.column(name).to_numpy()
        return pd.DataFrame(block.T, columns=roles.names, copy=False)
    # One block per column: no consolidation copy of the whole table.
    features = table.select(roles.features).to_pandas(split_blocks=True)
    features.columns = roles.names
    return features
