"""Units: the channel combiner (sagecraft.training.combine), on tables as the format readers give
them, without a training process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from sagecraft.categories import code_matrix
from sagecraft.errors import DataError
from sagecraft.media_types import CSV, LIBSVM, PARQUET
from sagecraft.training.combine import ColumnRoles, ReadFile, check_files, combine


def _file(name: str, columns: dict[str, list[object]], fmt: str = CSV) -> ReadFile:
    return ReadFile(Path(name), fmt, pa.table(columns))


def _roles(first: ReadFile, **options: object) -> ColumnRoles:
    settings = {"target": None, "header": False, "csv_weights": False, **options}
    return ColumnRoles.decide(first, **settings)  # type: ignore[arg-type]


def test_headerless_csv_features_are_named_after_the_label_is_split_off() -> None:
    first = _file("a.csv", {"f0": [1, 0], "f1": [0.5, 1.5], "f2": [2.0, 3.0]})
    roles = _roles(first)
    assert (roles.label, roles.weight, roles.features, roles.names) == (
        "f0",
        None,
        ["f1", "f2"],
        ["f0", "f1"],
    )
    table = combine([first], roles, channel="train")
    assert list(table.features.columns) == ["f0", "f1"]
    assert table.labels.tolist() == [1, 0]
    assert table.format == CSV


def test_an_error_names_the_feature_as_the_model_does() -> None:
    """The model's features are f0, f1: a bad second feature is f1, not the file's column f2."""
    first = _file("a.csv", {"f0": [1, 0], "f1": [0.5, 1.5], "f2": [[1], [2]]})
    with pytest.raises(DataError, match=r"feature column 'f1' in a\.csv is not numeric"):
        check_files([first], _roles(first))
    text = _file("b.csv", {"f0": [1, 0, 1], "f1": [0.5, 1.5, 2.5], "f2": ["1", "2", "x"]})
    with pytest.raises(
        DataError, match=r"feature column 'f1' in the 'train' channel is not numeric: it holds 'x'"
    ):
        combine([text], _roles(text), channel="train")


def test_weights_come_from_the_second_column_of_label_first_csv() -> None:
    first = _file("a.csv", {"f0": [1, 0], "f1": [2.0, 0.5], "f2": [7.0, 8.0], "f3": [9.0, 10.0]})
    roles = _roles(first, csv_weights=True)
    assert (roles.weight, roles.names) == ("f1", ["f0", "f1"])
    table = combine([first], roles, channel="train")
    assert table.weights is not None and table.weights.tolist() == [2.0, 0.5]
    assert table.features.to_numpy().tolist() == [[7.0, 9.0], [8.0, 10.0]]
    with pytest.raises(DataError, match="remove 'target' or csv_weights"):
        _roles(_file("p.parquet", {"y": [1], "x": [2], "z": [3]}, PARQUET), csv_weights=True)
    with pytest.raises(DataError, match="needs a label, a weight and features"):
        _roles(_file("a.csv", {"f0": [1], "f1": [2]}), csv_weights=True)
    negative = _file("n.csv", {"f0": [1, 0], "f1": [-1.0, 1.0], "f2": [1.0, 2.0]})
    with pytest.raises(DataError, match="missing or negative weights"):
        combine([negative], _roles(negative, csv_weights=True), channel="train")


def test_a_named_target_keeps_the_header_names() -> None:
    first = _file("a.csv", {"x": [1.0, 2.0], "species": ["a", "b"], "y": [3.0, 4.0]})
    roles = _roles(first, target="species", header=True)
    assert (roles.label, roles.features, roles.names) == ("species", ["x", "y"], ["x", "y"])
    assert "header row, label 'species'" in roles.describe(CSV, True)
    expected = r"target column 'z' is not in a\.csv; its columns are: x, species, y"
    with pytest.raises(DataError, match=expected):
        _roles(first, target="z", header=True)


def test_files_must_agree_on_their_columns() -> None:
    first = _file("a.csv", {"y": [1], "x": [2.0]})
    other = _file("b.csv", {"y": [1], "z": [2.0]})
    roles = _roles(first, target="y", header=True)
    with pytest.raises(DataError, match=r"b\.csv has columns \(y, z\) that differ from a\.csv \(y, x\)"):
        check_files([first, other], roles)


def test_rows_without_a_label_are_refused_and_files_are_concatenated() -> None:
    a = _file("a.csv", {"f0": [1, None], "f1": [0.5, 1.5]})
    with pytest.raises(DataError, match="1 row\\(s\\) with no label"):
        combine([a], _roles(a), channel="validation")
    b = _file("b.csv", {"f0": [1, 0], "f1": [0.5, 1.5]})
    c = _file("c.csv", {"f0": [0], "f1": [9.0]})
    table = combine([b, c], _roles(b), channel="train")
    assert table.labels.tolist() == [1, 0, 0] and table.features["f0"].tolist() == [0.5, 1.5, 9.0]


def test_libsvm_keeps_its_index_names_and_a_single_column_is_refused() -> None:
    first = _file("a.svm", {"label": [1.0], "f0": [None], "f1": [2.0]}, LIBSVM)
    roles = _roles(first)
    assert roles.names == ["f0", "f1"]
    assert "libsvm indices are column numbers" in roles.describe(LIBSVM, False)
    with pytest.raises(DataError, match="has 1 column; a label and features are needed"):
        _roles(_file("a.csv", {"f0": [1]}))


def test_float_features_are_one_block_the_forest_fits_on_without_a_copy() -> None:
    """Numbers of one float type become one column-major block: the matrix the forest fits on
    (scikit-learn's trees take Fortran order) is a view of it, so the rows are held once."""
    columns = {"f0": [1, 0, 1], **{f"f{i}": pa.array([0.5, None, 2.5], pa.float32()) for i in (1, 2, 3)}}
    first = _file("a.csv", columns)
    table = combine([first], _roles(first), channel="train")
    matrix = code_matrix(table.features, order="F")
    assert matrix.dtype == np.float32 and matrix.flags["F_CONTIGUOUS"] and matrix.shape == (3, 3)
    assert np.shares_memory(matrix, table.features.to_numpy())
    assert np.isnan(matrix[1]).all() and matrix[2].tolist() == [2.5, 2.5, 2.5]
    # text beside the numbers keeps one block per column (categories are encoded later)
    mixed = _file("b.csv", {"f0": [1, 0], "f1": [0.5, 1.5], "f2": ["red", "blue"]})
    assert combine([mixed], _roles(mixed), channel="train").features["f0"].tolist() == [0.5, 1.5]
