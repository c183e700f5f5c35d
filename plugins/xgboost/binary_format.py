"""XGBoost's old binary model format, read in Python into XGBoost's JSON model document.

Every `xgboost-model` that SageMaker's built-in XGBoost wrote with XGBoost 1.x is in this format
(`save_model` with no extension), and the XGBoost sagecraft runs no longer reads it. The layout is
XGBoost's C++ structs written as they lie in memory, little-endian (see XGBoost 1.x-2.x's
`LearnerIO::LoadModel`, `GBTreeModel::Load`, `RegTree::Load`):

- "binf", then the learner's parameters (136 bytes: base_score, num_feature, num_class, whether
  attributes follow, major and minor version, num_target, boost_from_average, reserved);
- the objective's and the booster's names (each a uint64 length and its bytes);
- for gbtree and dart: the booster's parameters (160 bytes: num_trees, num_parallel_tree, ...),
  each tree (148 bytes of parameters, then 20 bytes a node: parent, left, right, split index with
  the default direction in its top bit, split value or leaf value; then 16 bytes a node of
  statistics), the group of each tree (int32 each), and for dart the trees' weights;
  for gblinear: 136 bytes of parameters and the weights;
- the attributes (a count, then pairs of strings), where XGBoost >= 1.0 keeps the objective's
  configuration as JSON.

Every count is checked against the bytes that are left before anything is allocated, so a crafted
file costs no more than its size; the document then goes through `model_checks` like any other
before XGBoost loads it.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from sagecraft.errors import ModelLoadError

from .byte_reader import ByteReader

MAGIC = b"binf"
_LEARNER = struct.Struct("<fIiiiIIIi100x")  # 136 bytes
_GBTREE = struct.Struct("<ii152x")  # 160 bytes
_GBLINEAR_BYTES = 136
_TREE = struct.Struct("<iiiiIi124x")  # 148 bytes
_NODE = np.dtype([("parent", "<i4"), ("left", "<i4"), ("right", "<i4"), ("index", "<u4"), ("value", "<f4")])
_STAT = np.dtype([("loss", "<f4"), ("hess", "<f4"), ("weight", "<f4"), ("leaves", "<i4")])
MAX_STRING = 1 << 20
_DEFAULT_LEFT = 1 << 31


class _Reader(ByteReader):
    format_name = "XGBoost binary model"

    def unpack(self, layout: struct.Struct) -> tuple[Any, ...]:
        return layout.unpack(self.take(layout.size))

    def count(self, item_bytes: int, what: str) -> int:
        (count,) = struct.unpack("<Q", self.take(8))
        if count > self.left() // item_bytes:
            raise self.fail(f"{count} {what} would run past the end of the file")
        return int(count)

    def string(self, what: str) -> str:
        size = self.count(1, f"bytes of {what}")
        if size > MAX_STRING:
            raise self.fail(f"{what} of {size} bytes")
        try:
            return self.take(size).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not UTF-8") from None

    def array(self, dtype: np.dtype[Any], count: int, what: str) -> np.ndarray:
        if count < 0 or count > self.left() // dtype.itemsize:
            raise self.fail(f"{count} {what} would run past the end of the file")
        return np.frombuffer(self.take(count * dtype.itemsize), dtype)

    def floats(self, what: str) -> list[float]:
        count = self.count(4, what)
        return [float(v) for v in self.array(np.dtype("<f4"), count, what)]


def _float_text(value: float) -> str:
    return str(np.float32(value))


def _tree(reader: _Reader, tree_id: int) -> dict[str, Any]:
    _, n_nodes, n_deleted, _, n_features, leaf_vector = reader.unpack(_TREE)
    if n_nodes <= 0:
        raise reader.fail(f"tree {tree_id} has {n_nodes} nodes")
    if leaf_vector not in (0, 1):  # 0 in older files; vector leaves were never saved so
        raise reader.fail(f"tree {tree_id} has a size_leaf_vector of {leaf_vector}")
    nodes = reader.array(_NODE, n_nodes, f"nodes of tree {tree_id}")
    stats = reader.array(_STAT, n_nodes, f"node statistics of tree {tree_id}")
    index = nodes["index"]
    return {
        "base_weights": stats["weight"].astype(float).tolist(),
        "categories": [],
        "categories_nodes": [],
        "categories_segments": [],
        "categories_sizes": [],
        "default_left": (index >> 31).astype(int).tolist(),
        "id": tree_id,
        "left_children": nodes["left"].tolist(),
        "loss_changes": stats["loss"].astype(float).tolist(),
        "parents": (nodes["parent"].view("<u4") & (_DEFAULT_LEFT - 1)).astype(int).tolist(),
        "right_children": nodes["right"].tolist(),
        "split_conditions": nodes["value"].astype(float).tolist(),
        "split_indices": (index & (_DEFAULT_LEFT - 1)).astype(int).tolist(),
        "split_type": [0] * n_nodes,
        "sum_hessian": stats["hess"].astype(float).tolist(),
        "tree_param": {
            "num_deleted": str(n_deleted),
            "num_feature": str(n_features),
            "num_nodes": str(n_nodes),
            "size_leaf_vector": "1",
        },
    }


def _gbtree(reader: _Reader) -> dict[str, Any]:
    n_trees, parallel = reader.unpack(_GBTREE)
    if n_trees < 0 or n_trees > reader.left() // (_TREE.size + _NODE.itemsize):
        raise reader.fail(f"{n_trees} trees would run past the end of the file")
    parallel = max(parallel, 1)  # older files may leave it 0: one tree a group each round
    trees = [_tree(reader, i) for i in range(n_trees)]
    groups = reader.array(np.dtype("<i4"), n_trees, "tree groups").astype(int).tolist()
    indptr = [0]
    if groups:
        if min(groups) < 0:
            raise reader.fail("a tree in a negative output group")
        layer = parallel * (max(groups) + 1)
        if n_trees % layer:
            raise reader.fail(f"{n_trees} trees do not make whole rounds of {layer}")
        indptr = list(range(0, n_trees + 1, layer))
    return {
        "gbtree_model_param": {"num_parallel_tree": str(parallel), "num_trees": str(n_trees)},
        "iteration_indptr": indptr,
        "tree_info": groups,
        "trees": trees,
    }


def _booster(reader: _Reader, name: str) -> dict[str, Any]:
    if name == "gbtree":
        return {"name": "gbtree", "model": _gbtree(reader)}
    if name == "dart":
        model = _gbtree(reader)
        weights = reader.floats("tree weights") if model["trees"] else []
        if len(weights) != len(model["trees"]):
            raise reader.fail(f"{len(weights)} tree weights for {len(model['trees'])} trees")
        return {"name": "dart", "gbtree": {"name": "gbtree", "model": model}, "weight_drop": weights}
    if name == "gblinear":
        reader.take(_GBLINEAR_BYTES)
        return {"name": "gblinear", "model": {"boosted_rounds": 0, "weights": reader.floats("weights")}}
    raise reader.fail(f"unknown booster {name!r}")


def read_binary_model(data: bytes) -> dict[str, Any]:
    """The JSON model document (as XGBoost's `save_raw("json")` would write it) of a model file
    in XGBoost's old binary format. Raises ModelLoadError naming what is wrong and where."""
    if data[:4] != MAGIC:
        raise ModelLoadError("not an XGBoost binary model: it does not start with 'binf'")
    reader = _Reader(data)
    reader.take(4)
    (base_score, n_features, n_classes, has_attributes, _, major, minor, n_targets, from_average) = (
        reader.unpack(_LEARNER)
    )
    if major < 1:
        raise ModelLoadError(
            "an XGBoost binary model written before XGBoost 1.0, which kept its base score transformed "
            "and no objective configuration; load it with XGBoost 1.x and save it again"
        )
    objective_name = reader.string("the objective's name")
    booster = _booster(reader, reader.string("the booster's name"))
    attributes: dict[str, str] = {}
    if has_attributes:
        for _ in range(reader.count(16, "attributes")):
            key = reader.string("an attribute's name")
            attributes[key] = reader.string(f"attribute {key!r}")
    if reader.at != len(data):
        raise reader.fail("bytes after the end of the model")
    try:
        objective = orjson.loads(attributes.pop("objective"))
    except (KeyError, orjson.JSONDecodeError):
        raise ModelLoadError("an XGBoost binary model without its objective's configuration") from None
    if not isinstance(objective, dict) or objective.get("name") != objective_name:
        raise ModelLoadError(
            f"an XGBoost binary model whose objective configuration does not match {objective_name!r}"
        )
    attributes.pop("metrics", None)  # evaluation metrics: nothing a served model uses
    return {
        "learner": {
            "attributes": attributes,
            "feature_names": [],
            "feature_types": [],
            "gradient_booster": booster,
            "learner_model_param": {
                "base_score": _float_text(base_score),
                "boost_from_average": str(int(bool(from_average))),
                "num_class": str(n_classes),
                "num_feature": str(n_features),
                "num_target": str(max(n_targets, 1)),  # 0 (reserved) in files older than the field
            },
            "objective": objective,
        },
        "version": [int(major), int(minor), 0],
    }
