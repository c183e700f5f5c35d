"""The random forest on several hosts: each grows its share of the trees on its own rows, and the
leader gathers them into one forest.

A forest's trees are independent, so no host waits for another while growing them. The hosts
exchange only: their row counts (to share the trees among the hosts that have rows), the trees
at the end (as skops bytes, checked by the leader as any loaded forest is; never pickle), and
for the validation metrics the validation rows, which every host predicts with its own trees:
the trees' summed probabilities, added up across the hosts, are exactly the merged forest's.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from sklearn.tree._tree import Tree

from sagecraft.cluster import Cluster
from sagecraft.errors import ModelLoadError

from .flat_forest import Forest
from .persistence import forest_bytes, forest_from_bytes

MAX_SEED = 2**32 - 1  # numpy's seeds


def tree_share(total: int, rows: Sequence[int], rank: int) -> int:
    """How many of `total` trees host `rank` grows: an equal share for each host with rows
    (one more for the first `total % hosts` of them), none for a host without rows."""
    holders = [r for r, count in enumerate(rows) if count > 0]
    if rank not in holders:
        return 0
    position = holders.index(rank)
    return total // len(holders) + (1 if position < total % len(holders) else 0)


def host_seed(seed: int | None, cluster: Cluster) -> int | None:
    """Each host's own seed, so that hosts holding the same rows still grow different trees."""
    return None if seed is None else (seed + cluster.rank) % MAX_SEED


def widen_classes(model: Forest, n_classes: int) -> None:
    """Give a classifier grown on a shard that lacks some classes every class of the job, so
    that the hosts' trees can be merged: each tree's values get a zero column per absent class."""
    present = np.asarray(model.classes_, dtype=np.int64)
    if len(present) == n_classes:
        return
    for estimator in model.estimators_:
        state = estimator.tree_.__getstate__()
        values = np.zeros((state["values"].shape[0], 1, n_classes), dtype=state["values"].dtype)
        values[:, :, present] = state["values"]
        state["values"] = values
        tree = Tree(estimator.tree_.n_features, np.array([n_classes], dtype=np.intp), 1)
        tree.__setstate__(state)
        estimator.tree_ = tree
        estimator.classes_, estimator.n_classes_ = np.arange(n_classes), n_classes
    model.classes_, model.n_classes_ = np.arange(n_classes), n_classes
    if hasattr(model, "oob_decision_function_"):
        local = model.oob_decision_function_
        wide = np.zeros((len(local), n_classes))
        wide[:, present] = local
        wide[np.isnan(local).any(axis=1)] = np.nan  # rows that every tree saw stay unscored
        model.oob_decision_function_ = wide


def summed_values(model: Forest | None, matrix: np.ndarray, width: int, classifier: bool) -> np.ndarray:
    """The sum over this host's trees of each row's class probabilities (or predicted value):
    the forest's mean times its number of trees; zeros for a host without trees."""
    if model is None or len(matrix) == 0:
        return np.zeros((len(matrix), width))
    values = model.predict_proba(matrix) if classifier else model.predict(matrix).reshape(-1, 1)
    return np.asarray(values, dtype=np.float64) * len(model.estimators_)


def gather_rows(cluster: Cluster, matrix: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every host's validation rows and labels, in rank order, on every host (as .npy bytes)."""

    def pack(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        return buffer.getvalue()

    def unpack(data: bytes) -> np.ndarray:
        return np.load(io.BytesIO(data), allow_pickle=False)

    matrices = [unpack(d) for d in cluster.gather(pack(np.ascontiguousarray(matrix)))]
    label_sets = [unpack(d) for d in cluster.gather(pack(np.asarray(labels)))]
    return np.concatenate(matrices), np.concatenate(label_sets)


def merge_on_leader(model: Forest | None, cluster: Cluster) -> Forest | None:
    """The leader's forest with every host's trees (in rank order); None on the other hosts."""
    sent = cluster.gather(forest_bytes(model) if model is not None else b"")
    if not cluster.is_leader:
        return None
    forests = []
    for host, data in zip(cluster.hosts, sent, strict=True):
        if data:
            try:
                forests.append(forest_from_bytes(data, f"the trees grown by {host}"))
            except ModelLoadError as exc:
                raise ModelLoadError(f"the forest could not be merged: {exc}") from None
    merged = model if model is not None else forests[0]
    merged.estimators_ = [tree for forest in forests for tree in forest.estimators_]
    merged.set_params(n_estimators=len(merged.estimators_))
    return merged
