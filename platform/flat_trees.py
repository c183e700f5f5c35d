"""Binary decision trees as flat arrays, walked all together in numpy: the fast path for the few rows
of a typical request.

A tree library's own predict pays a fixed cost per call (input checks, thread dispatch, one Python
or C++ call per tree) that dwarfs the work for one row. Here every tree's nodes sit in one set of
arrays and every row walks every tree at once, one numpy step per level; the library's compiled
traversal still wins on large batches. A plugin builds `FlatTrees` from its library's fitted trees
(`TreeNodes` each) and aggregates the leaves it gets back in its library's own order and precision,
so the answers are the library's to the last bit; its tests compare the two on thousands of rows.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TreeNodes:
    """One fitted tree in its library's layout. A row goes to `left` when its value of `feature`
    is at most `threshold` (a library that splits on `<` passes the next float below its split),
    to `left` when the value is missing and `missing_left` is set, else to `right`. Leaves have
    `left == -1`; node 0 is the root."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    """Edges on the longest path from the root (0) to a leaf."""
    depth, level = 0, np.array([0])
    while True:
        split = level[left[level] != -1]
        if not split.size:
            return depth
        level = np.concatenate([left[split], right[split]])
        depth += 1


@dataclass(frozen=True)
class FlatTrees:
    """Every tree's nodes in one set of arrays; child indices point into the same arrays, and a
    leaf's children are the leaf itself, so walking past a shallow tree's leaves stays put."""

    roots: np.ndarray  # (n_trees,) index of each tree's root
    feature: np.ndarray  # (n_nodes,) split feature (0 at leaves)
    threshold: np.ndarray  # (n_nodes,) float64: go left when the value is at most this
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray  # (n_nodes,) bool
    depth: int

    @property
    def n_trees(self) -> int:
        return len(self.roots)

    @classmethod
    def from_trees(cls, trees: Iterable[TreeNodes]) -> FlatTrees:
        parts: dict[str, list[np.ndarray]] = {k: [] for k in
                                              ("feature", "threshold", "left", "right", "missing")}
        roots, offset, depth = [], 0, 0
        for tree in trees:
            left, right = np.asarray(tree.left), np.asarray(tree.right)
            nodes = np.arange(len(left))
            leaf = left == -1
            roots.append(offset)
            parts["feature"].append(np.where(leaf, 0, tree.feature))
            parts["threshold"].append(np.where(leaf, 0.0, np.asarray(tree.threshold, np.float64)))
            parts["left"].append(np.where(leaf, nodes, left) + offset)
            parts["right"].append(np.where(leaf, nodes, right) + offset)
            parts["missing"].append(np.asarray(tree.missing_left, bool))
            depth = max(depth, _depth(left, right))
            offset += len(left)
        joined = {k: np.concatenate(v) for k, v in parts.items()}
        return cls(np.array(roots, dtype=np.intp), joined["feature"].astype(np.intp),
                   joined["threshold"], joined["left"].astype(np.intp),
                   joined["right"].astype(np.intp), joined["missing"], depth)

    @functools.cached_property
    def is_leaf(self) -> np.ndarray:
        """(n_nodes,) bool: the node is a leaf (its children are itself)."""
        return self.left == np.arange(len(self.left))

    @functools.cached_property
    def _by_slot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The walk's arrays, indexed by slot: node n at slots 2n and 2n + 1, so that one `take`
        of `slot + go_left` finds the child's slot (its right child at 2n, its left at 2n + 1)."""
        children = 2 * np.stack([self.right, self.left], axis=1).ravel()
        return (np.repeat(self.feature, 2), np.repeat(self.threshold, 2),
                np.repeat(self.missing_left, 2), children)

    @functools.cached_property
    def _root_slots(self) -> np.ndarray:
        return 2 * self.roots

    def leaves(self, matrix: np.ndarray) -> np.ndarray:
        """(n_rows, n_trees): the index (into these arrays) of the leaf each row reaches in each
        tree. `matrix` holds the features as the library compares them (float32 for both built-in
        plugins), NaN for a missing value."""
        n_rows, n_features = matrix.shape
        # float64 like the thresholds (exact for float32 values): a mixed comparison costs more.
        cells = np.asarray(matrix, np.float64).ravel()
        feature, threshold, missing_left, children = self._by_slot
        any_missing = bool(np.isnan(cells).any())
        slot = np.empty((n_rows, self.n_trees), np.intp)
        slot[:] = self._root_slots  # (np.tile costs more than the walk of a level)
        row_start = (np.arange(n_rows) * n_features)[:, None] if n_rows > 1 else None
        # `take` on flat arrays, as few numpy calls a level as possible: for a few rows numpy's
        # per-call cost is the whole cost.
        for _ in range(self.depth):
            cell = feature.take(slot)
            if row_start is not None:
                cell += row_start
            x = cells.take(cell)
            go_left = x <= threshold.take(slot)
            if any_missing:
                go_left |= np.isnan(x) & missing_left.take(slot)
            slot = children.take(slot + go_left)
        return slot >> 1
