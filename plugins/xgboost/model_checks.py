"""Every tree of a loaded booster checked before it predicts anything.

XGBoost loads a model file's node arrays as they are and indexes them without bounds checks when it
predicts: a child index outside the tree makes `inplace_predict` read arbitrary memory (a crash, seen
with a one-number edit of a real model), and a child that points back up loops. So after XGBoost has
parsed the file, and before anything predicts, `check_document` reads XGBoost's own JSON of what it
loaded and refuses anything that is not a well-formed set of trees over the model's features, with a
ModelLoadError naming the tree and node.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import orjson

from sagecraft.errors import ModelLoadError
from sagecraft.flat_trees import TreeNodes, check_values
from sagecraft.manifest import Manifest

NODE_ARRAYS = (
    "left_children",
    "right_children",
    "parents",
    "split_indices",
    "split_conditions",
    "default_left",
    "split_type",
    "sum_hessian",
    "loss_changes",
)
CATEGORICAL = 1
NO_PARENT = (2**31 - 1, -1)  # the root's parent as XGBoost writes it (its own marker, masked)
SMALLEST_COVER = float(np.finfo(np.float32).tiny)
MAX_CATEGORIES = 1 << 20  # codes a categorical split may name where the model lists no categories


def tree_nodes(tree: dict[str, Any]) -> TreeNodes:
    """An XGBoost tree (JSON form) in the core's layout. XGBoost goes left when value < split;
    the core goes left when value <= threshold, so the threshold is the float32 below the split."""
    split = np.asarray(tree["split_conditions"], np.float32)
    below = np.nextafter(split, np.float32(-np.inf))
    return TreeNodes(
        np.asarray(tree["split_indices"]),
        below,
        np.asarray(tree["left_children"]),
        np.asarray(tree["right_children"]),
        np.asarray(tree["default_left"], bool),
    )


def check_against_manifest(document: dict[str, Any], manifest: Manifest, where: str) -> None:
    """The booster must read the manifest's features, and know each categorical feature by the
    manifest's categories: requests are decoded by the manifest, XGBoost recodes them by its own
    list, and a category in one list only fails every request that holds it."""
    n_features = int(document["learner"]["learner_model_param"]["num_feature"])
    manifest.require_features(n_features, where)
    named = list(document["learner"].get("feature_names") or [])
    if named and named != manifest.feature_names:  # XGBoost matches a table's columns by name
        raise ModelLoadError(f"{where}: the model's feature names are not those its manifest.json lists")
    booster = document["learner"]["gradient_booster"]
    if booster["name"] == "gblinear":
        return
    model = booster["gbtree"]["model"] if booster["name"] == "dart" else booster["model"]
    for feature, names in zip(manifest.features, category_names(model, n_features, where), strict=True):
        if names is not None and feature.categories is not None and names != feature.categories:
            raise ModelLoadError(
                f"{where}: the model's categories of feature '{feature.name}' "
                "are not those its manifest.json lists"
            )


def trees_of(document: dict[str, Any]) -> tuple[list[dict[str, Any]], list[int]]:
    """The trees of a gbtree or dart booster, and each tree's output group; none for gblinear."""
    booster = document["learner"]["gradient_booster"]
    if booster["name"] == "gblinear":
        return [], []
    model = booster["gbtree"]["model"] if booster["name"] == "dart" else booster["model"]
    return model["trees"], [int(group) for group in model["tree_info"]]


def _integer(value: Any, what: str, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ModelLoadError(f"{where}: {what} {value!r} is not a number") from None
    if number < 0:
        raise ModelLoadError(f"{where}: {what} is negative ({number})")
    return number


def _check_base_score(raw: Any, where: str) -> None:
    """XGBoost writes the base score as text: "5E-1", or "[5E-1,2E-1]" with one per output."""
    try:
        scores = np.asarray(orjson.loads(raw) if isinstance(raw, str) else raw, np.float64).reshape(-1)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        scores = np.array([np.nan])
    if not scores.size or not np.isfinite(scores).all():
        raise ModelLoadError(f"{where}: base_score {str(raw)[:40]!r} is not a finite number")


def _check_forest_layout(
    document: dict[str, Any], trees: list[dict[str, Any]], groups: list[int], n_groups: int, where: str
) -> None:
    """XGBoost files each tree under its `id` and finds a round's trees by `iteration_indptr`:
    ids must be 0, 1, ... in order, the counts agree, and each tree belong to an output."""
    booster = document["learner"]["gradient_booster"]
    model = booster["gbtree"]["model"] if booster["name"] == "dart" else booster["model"]
    declared = _integer(model["gbtree_model_param"]["num_trees"], "num_trees", where)
    if declared != len(trees) or [_integer(t["id"], "a tree id", where) for t in trees] != list(
        range(len(trees))
    ):
        raise ModelLoadError(
            f"{where}: its {len(trees)} trees are not numbered 0 to "
            f"{len(trees) - 1} in order, or num_trees says {declared}"
        )
    if len(groups) != len(trees) or any(g >= n_groups for g in groups):
        raise ModelLoadError(
            f"{where}: tree_info does not give each of its {len(trees)} trees "
            f"one of the model's {n_groups} outputs"
        )
    if _integer(model["gbtree_model_param"].get("num_parallel_tree", 1), "num_parallel_tree", where) < 1:
        raise ModelLoadError(f"{where}: num_parallel_tree is below 1")
    if "iteration_indptr" in model:
        indptr = np.asarray(model["iteration_indptr"])
        if (
            indptr.dtype.kind not in "iu"
            or indptr.ndim != 1
            or not len(indptr)
            or indptr[0] != 0
            or indptr[-1] != len(trees)
            or (np.diff(indptr.astype(np.int64)) < 0).any()
        ):
            raise ModelLoadError(f"{where}: iteration_indptr does not divide its trees into rounds")
    if booster["name"] == "dart" and len(booster.get("weight_drop", [])) != len(trees):
        raise ModelLoadError(f"{where}: weight_drop does not hold one weight per tree")


def _check_parents(parents: np.ndarray, nodes: TreeNodes, where: str) -> None:
    """XGBoost walks up the tree too (feature contributions): each child's parent must be the node
    that points to it, the root's none, and every other entry a node or none."""
    if parents.dtype.kind not in "iu":
        raise ModelLoadError(f"{where}: parent indices are not integers")
    parents = parents.astype(np.int64)
    split = np.flatnonzero(nodes.left != -1)
    wrong = ((parents[nodes.left[split]] != split) | (parents[nodes.right[split]] != split)).any()
    stray = ~np.isin(parents, NO_PARENT) & ((parents < 0) | (parents >= len(parents)))
    if wrong or parents[0] not in NO_PARENT or stray.any():
        raise ModelLoadError(f"{where}: its parent links do not match its child links")


def _check_categories(tree: dict[str, Any], nodes: TreeNodes, widths: np.ndarray, where: str) -> None:
    """A categorical split's categories (those that go right, as codes) are a segment of the tree's
    `categories`; XGBoost sets a bit per code, so codes must be below the feature's category count
    (`widths`, from the model's category encoder, or MAX_CATEGORIES without one)."""
    split_type = np.asarray(tree["split_type"])
    categorical = split_type == CATEGORICAL
    listed, segments, sizes = (
        np.asarray(tree[k], np.int64) for k in ("categories_nodes", "categories_segments", "categories_sizes")
    )
    if not np.isin(split_type, (0, CATEGORICAL)).all():
        raise ModelLoadError(f"{where}: a split type other than numerical or categorical")
    if (
        (categorical & (nodes.left == -1)).any()
        or not np.array_equal(listed, np.flatnonzero(categorical))
        or not len(listed) == len(segments) == len(sizes)
    ):
        raise ModelLoadError(f"{where}: its categorical splits and their category lists disagree")
    codes = np.asarray(tree["categories"])
    if not len(listed):
        return
    if (
        codes.dtype.kind not in "iu"
        or segments.min() < 0
        or sizes.min() < 0
        or (segments + sizes).max() > len(codes)
    ):
        raise ModelLoadError(f"{where}: a categorical split points outside its categories")
    codes = codes.astype(np.int64)
    for node, start, size in zip(listed, segments, sizes, strict=True):
        width = widths[int(np.asarray(nodes.feature)[node])]
        chosen = codes[start : start + size]
        if size and (chosen.min() < 0 or chosen.max() >= width):
            raise ModelLoadError(
                f"{where}: node {node} splits on a category code outside the feature's {width} categories"
            )


def _category_widths(model: dict[str, Any], n_features: int, where: str) -> np.ndarray:
    """How many categories each feature has, by the model's category encoder (XGBoost 3's
    `cats`): MAX_CATEGORIES for features it does not describe (older models, numeric codes)."""
    names = category_names(model, n_features, where)
    return np.array([MAX_CATEGORIES if n is None else len(n) for n in names], np.int64)


def category_names(model: dict[str, Any], n_features: int, where: str) -> list[list[str] | None]:
    """Each feature's category names by the model's category encoder (XGBoost 3's `cats`, which
    XGBoost uses to find a request's categories), None for a feature it does not describe;
    ModelLoadError for an encoder that is not well formed."""
    described: list[list[str] | None] = [None] * n_features
    cats = model.get("cats")
    if not cats or not len(cats.get("feature_segments", ())):
        return described
    segments = np.asarray(cats["feature_segments"])
    sorted_idx = np.asarray(cats["sorted_idx"])
    encoders = cats.get("enc", [])
    if (
        segments.dtype.kind not in "iu"
        or len(segments) != n_features + 1
        or segments[0] != 0
        or (np.diff(segments.astype(np.int64)) < 0).any()
        or segments[-1] != len(sorted_idx)
        or len(encoders) != n_features
    ):
        raise ModelLoadError(f"{where}: its category encoder does not describe its features")
    counts = np.diff(segments.astype(np.int64))
    for feature, (encoder, count) in enumerate(zip(encoders, counts, strict=True)):
        start = int(segments[feature])
        order = np.asarray(sorted_idx[start : start + count], np.int64)
        if not np.array_equal(np.sort(order), np.arange(count)):
            raise ModelLoadError(f"{where}: feature {feature}'s category order is not a permutation")
        offsets = np.asarray(encoder.get("offsets", ()))
        values = encoder.get("values", ())
        if count and (
            offsets.dtype.kind not in "iu"
            or len(offsets) != count + 1
            or offsets[0] != 0
            or (np.diff(offsets.astype(np.int64)) < 0).any()
            or offsets[-1] != len(values)
        ):
            raise ModelLoadError(f"{where}: feature {feature}'s category names are malformed")
        raw = np.asarray(values)
        if not count:
            continue
        names = (
            [
                bytes(raw[a:b].astype(np.uint8)).decode("utf-8", "replace")
                for a, b in itertools.pairwise(offsets)
            ]
            if len(offsets)
            else [str(v) for v in raw.tolist()]
        )
        if len(set(names)) != count:
            raise ModelLoadError(f"{where}: feature {feature} names a category twice")
        described[feature] = names  # in code order
    return described


def check_document(document: dict[str, Any], where: str) -> None:
    """Raise ModelLoadError unless the booster XGBoost describes in `document` (its
    `save_raw("json")`) is safe to predict with: every tree well formed over the model's features
    (`TreeNodes.check`), its categorical splits inside its category list, its leaf values finite,
    each tree in an output group the model has, a linear model's weights of the right count."""
    try:
        learner = document["learner"]
        parameters = learner["learner_model_param"]
        n_features = _integer(parameters["num_feature"], "num_feature", where)
        n_groups = max(
            1,
            _integer(parameters["num_class"], "num_class", where),
            _integer(parameters.get("num_target", 1), "num_target", where),
        )
        _check_base_score(parameters["base_score"], where)
        booster = learner["gradient_booster"]
        if booster["name"] == "gblinear":
            weights = np.asarray(booster["model"]["weights"], np.float64)
            if weights.ndim != 1 or len(weights) != (n_features + 1) * n_groups:
                raise ModelLoadError(
                    f"{where}: {len(weights)} linear weights for {n_features} features and {n_groups} outputs"
                )
            check_values(weights[:, None], f"{where}, linear weights")
            return
        trees, groups = trees_of(document)
        _check_forest_layout(document, trees, groups, n_groups, where)
        model = booster["gbtree"]["model"] if booster["name"] == "dart" else booster["model"]
        widths = _category_widths(model, n_features, where)
        for index, tree in enumerate(trees):
            at = f"{where}, tree {index}"
            n_nodes = _integer(tree["tree_param"]["num_nodes"], "num_nodes", at)
            if any(len(tree[name]) != n_nodes for name in NODE_ARRAYS):
                raise ModelLoadError(f"{at}: its node arrays do not all hold num_nodes = {n_nodes}")
            nodes = tree_nodes(tree)
            nodes.check(n_features, at)
            leaf = nodes.left == -1
            leaf_width = _integer(tree["tree_param"].get("size_leaf_vector", 1), "size_leaf_vector", at)
            if leaf_width > 1:  # vector leaves, one value per output, in base_weights
                weights = np.asarray(tree["base_weights"], np.float64)
                if leaf_width != n_groups or weights.shape != (n_nodes * leaf_width,):
                    raise ModelLoadError(
                        f"{at}: leaves of {leaf_width} values for a model of "
                        f"{n_groups} outputs, or {weights.size} leaf values"
                    )
                check_values(weights.reshape(n_nodes, leaf_width), at)
            # Leaf values, thresholds and the statistics beside them: XGBoost writes a non-finite
            # one as bare `inf` or `nan`, which is not JSON, and feature contributions divide by
            # each split's cover (its hessian sum).
            for name in ("split_conditions", "base_weights", "loss_changes", "sum_hessian"):
                check_values(np.asarray(tree[name], np.float64), f"{at}, {name}")
            cover = np.asarray(tree["sum_hessian"], np.float64)
            # A subnormal cover is no real split's either: contributions divide by it (and
            # overflow), which a crafted binary file found.
            if (cover < 0).any() or (cover[~leaf] < SMALLEST_COVER).any():
                raise ModelLoadError(f"{at}: a split covers no weight (sum_hessian)")
            _check_parents(np.asarray(tree["parents"]), nodes, at)
            _check_categories(tree, nodes, widths, at)
    except ModelLoadError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, orjson.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"{where} does not describe an XGBoost model XGBoost can predict with: "
            f"{type(exc).__name__}: {exc}"
        ) from None
