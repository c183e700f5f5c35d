"""Binary decision trees as flat arrays, walked by small compiled loops: the fast path for the few
rows of a typical request.

A tree library's own predict pays a fixed cost per call (input checks, thread dispatch, one Python
or C++ call per tree) that dwarfs the work for one row. Here every tree's nodes sit in one set of
arrays and a loop compiled by numba walks each row down each tree; the library's own traversal
still wins on large batches. A plugin builds `FlatTrees` from its library's fitted trees
(`TreeNodes` each) and has `sums` add up the leaves' values in its library's own order and
precision (or takes the leaves themselves from `leaves`), so the answers are the library's to the
last bit; its tests compare the two on thousands of rows.

Why numba: walking all trees at once in numpy (one numpy call per step of a level) costs about
1.5 µs a call, and far more on a busy server where each call finds the caches cold; the compiled
loop walks 7 rows of 100 trees of depth 12 in 32 µs against 139, and 1 row of 100 trees of depth 6
in 3.4 µs against 28 (measured side by side). The loops are compiled once per process when trees
are flattened (the server's parent loads the model, so its workers inherit them), and cached on
disk where the package's folder is writable.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numba
import numpy as np

from .errors import ModelLoadError

__all__ = [
    "FlatTrees",
    "TreeNodes",
    "check_values",
]

log = logging.getLogger(__name__)


_uncached: list[bool] = []  # set once numba has said it cannot cache here


def _compiled(function: Callable) -> Callable:
    """numba's compiled `function`, cached on disk beside this module (or in NUMBA_CACHE_DIR);
    compiled in each process where no folder for the cache is writable."""
    if not _uncached:
        try:
            return numba.njit(cache=True, nogil=True)(function)
        except RuntimeError:
            log.warning(
                "numba finds no writable folder for its cache (set NUMBA_CACHE_DIR): "
                "the tree walk is compiled at each start"
            )
            _uncached.append(True)
    return numba.njit(nogil=True)(function)


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

    def check(self, n_features: int, where: str) -> None:
        """Raise ModelLoadError naming `where` and the node unless this is a well-formed tree over
        `n_features` features: arrays of one length, every split's children inside the tree and
        reached from one parent only (so no cycles, self-loops or shared subtrees), split features
        below `n_features`, thresholds that are numbers. Called on every tree of a model file
        before any of it predicts: the walk here, XGBoost's and scikit-learn's index these arrays
        without bounds checks, so a crafted file could otherwise read any memory or loop forever.
        """
        arrays = [
            np.asarray(a) for a in (self.feature, self.threshold, self.left, self.right, self.missing_left)
        ]
        n_nodes = len(arrays[2])
        if n_nodes == 0 or any(a.ndim != 1 or len(a) != n_nodes for a in arrays):
            raise ModelLoadError(f"{where}: its node arrays are empty or of different lengths")
        for name, array in (("feature", arrays[0]), ("child", arrays[2]), ("child", arrays[3])):
            if array.dtype.kind not in "iu":
                raise ModelLoadError(f"{where}: {name} indices are not integers")
        left, right = arrays[2].astype(np.int64), arrays[3].astype(np.int64)
        leaf = left == -1
        split = np.flatnonzero(~leaf)
        _refuse_first(where, leaf & (right != -1), "is a leaf on one side only")
        _refuse_first(
            where,
            ~leaf & ((left < 1) | (left >= n_nodes) | (right < 1) | (right >= n_nodes)),
            "has a child outside the tree",
        )
        _refuse_first(
            where,
            ~leaf & ((left == np.arange(n_nodes)) | (right == np.arange(n_nodes)) | (left == right)),
            "is its own child or has one child twice",
        )
        parents = np.bincount(np.concatenate([left[split], right[split]]), minlength=n_nodes)
        _refuse_first(where, parents > 1, "is the child of two nodes (a cycle or a shared subtree)")
        feature = arrays[0].astype(np.int64)
        _refuse_first(
            where,
            ~leaf & ((feature < 0) | (feature >= n_features)),
            f"splits on a feature outside the model's {n_features}",
        )
        if arrays[1].dtype.kind not in "fiu":
            raise ModelLoadError(f"{where}: thresholds are not numbers")
        _refuse_first(
            where, ~leaf & np.isnan(arrays[1].astype(np.float64)), "has a threshold that is not a number"
        )


_ANY_WIDTH = 2**62


def check_values(values: np.ndarray, where: str) -> None:
    """Raise ModelLoadError naming `where` and the first node whose value (a row of `values`, one
    per node) is not finite: a leaf worth infinity or NaN answers nonsense for every row."""
    values = np.asarray(values)
    if values.dtype.kind not in "fiu":
        raise ModelLoadError(f"{where}: node values are not numbers")
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    _refuse_first(where, bad, "holds a value that is not finite")


def _refuse_first(where: str, bad: np.ndarray, what: str) -> None:
    if bad.any():
        raise ModelLoadError(f"{where}: node {int(np.flatnonzero(bad)[0])} {what}")


@dataclass(frozen=True)
class FlatTrees:
    """Every tree's nodes in one set of arrays; child indices point into the same arrays, and a
    leaf's children are the leaf itself (which is how the walk knows it has arrived)."""

    roots: np.ndarray  # (n_trees,) index of each tree's root
    feature: np.ndarray  # (n_nodes,) split feature (0 at leaves)
    threshold: np.ndarray  # (n_nodes,) float64: go left when the value is at most this
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray  # (n_nodes,) bool
    min_width: int = 0  # the highest split feature + 1: the columns a row must have at least

    @property
    def n_trees(self) -> int:
        return len(self.roots)

    @classmethod
    def from_trees(cls, trees: Iterable[TreeNodes], n_features: int | None = None) -> FlatTrees:
        """Every tree of a model over `n_features` features, each checked first (`TreeNodes.check`,
        ModelLoadError naming the tree and node). Pass the model's feature count: without it
        (plugins written before it was asked for) any split feature is accepted, and the walk
        still refuses rows too narrow for the trees."""
        parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("feature", "threshold", "left", "right", "missing")
        }
        roots, offset = [], 0
        for index, tree in enumerate(trees):
            tree.check(_ANY_WIDTH if n_features is None else n_features, f"tree {index}")
            left, right = np.asarray(tree.left), np.asarray(tree.right)
            nodes = np.arange(len(left))
            leaf = left == -1
            roots.append(offset)
            parts["feature"].append(np.where(leaf, 0, tree.feature))
            parts["threshold"].append(np.where(leaf, 0.0, np.asarray(tree.threshold, np.float64)))
            parts["left"].append(np.where(leaf, nodes, left) + offset)
            parts["right"].append(np.where(leaf, nodes, right) + offset)
            parts["missing"].append(np.asarray(tree.missing_left, bool))
            offset += len(left)
        joined = {k: np.concatenate(v) for k, v in parts.items()}
        flat = cls(
            np.array(roots, dtype=np.intp),
            joined["feature"].astype(np.intp),
            joined["threshold"],
            joined["left"].astype(np.intp),
            joined["right"].astype(np.intp),
            joined["missing"],
            int(joined["feature"].max(initial=-1)) + 1,
        )
        compile_walk()  # now, with the model: not at the first request, in each worker
        return flat

    def _cells(self, matrix: np.ndarray) -> np.ndarray:
        """The matrix as the walk reads it: C order, float32 or float64 (both compare exactly with
        the float64 thresholds), wide enough for every split: a narrower row would send the walk
        into the next row's cells, or past the matrix."""
        if matrix.ndim != 2 or matrix.shape[1] < self.min_width:
            raise ValueError(f"rows of {matrix.shape[1:]} features for trees that split on {self.min_width}")
        if matrix.dtype in (np.float32, np.float64):
            return np.ascontiguousarray(matrix)
        return np.ascontiguousarray(matrix, np.float64)

    @functools.cached_property
    def is_leaf(self) -> np.ndarray:
        """(n_nodes,) bool: the node is a leaf (its children are itself)."""
        return self.left == np.arange(len(self.left))

    @functools.cached_property
    def _links(self) -> np.ndarray:
        """(n_nodes, 3) int64: each node's feature, left and right child side by side, so that a
        step of the walk finds them in one cache line."""
        return np.ascontiguousarray(np.stack([self.feature, self.left, self.right], axis=1), dtype=np.int64)

    @functools.cached_property
    def _every_tree(self) -> np.ndarray:
        return np.arange(self.n_trees)

    def leaves(self, matrix: np.ndarray) -> np.ndarray:
        """(n_rows, n_trees): the index (into these arrays) of the leaf each row reaches in each
        tree. `matrix` holds the features as the library compares them (float32 for both built-in
        plugins), NaN for a missing value."""
        matrix = self._cells(matrix)
        out = np.empty((len(matrix), self.n_trees), np.intp)
        _walk_rows(matrix, self.roots, self._links, self.threshold, self.missing_left, out)
        return out

    def sums(
        self, matrix: np.ndarray, values: np.ndarray, start: np.ndarray, trees: np.ndarray | None = None
    ) -> np.ndarray:
        """(n_rows, n_outputs): for each row, `start` plus the `values` row of the leaf it reaches
        in each tree (every tree, or those listed in `trees`), added tree after tree in the dtype
        of `values` (n_nodes, n_outputs): a library's own loop, in its order and precision,
        without the (n_rows, n_trees, n_outputs) array of leaf values in between."""
        matrix = self._cells(matrix)
        values = np.ascontiguousarray(values)
        out = np.empty((len(matrix), values.shape[1]), values.dtype)
        out[:] = start
        chosen = self._every_tree if trees is None else np.asarray(trees, np.intp)
        _sum_rows(matrix, chosen, self.roots, self._links, self.threshold, self.missing_left, values, out)
        return out


@_compiled
def _leaf(
    matrix: np.ndarray,
    row: int,
    node: int,
    links: np.ndarray,
    threshold: np.ndarray,
    missing_left: np.ndarray,
) -> int:
    """The leaf `row` reaches from `node` (a tree's root)."""
    while True:
        left = links[node, 1]
        if left == node:  # a leaf
            return node
        value = matrix[row, links[node, 0]]
        goes_left = value <= threshold[node] or (value != value and missing_left[node])
        node = left if goes_left else links[node, 2]


@_compiled
def _walk_rows(
    matrix: np.ndarray,
    roots: np.ndarray,
    links: np.ndarray,
    threshold: np.ndarray,
    missing_left: np.ndarray,
    out: np.ndarray,
) -> None:
    """out[row, tree]: the leaf each row reaches in each tree. Tree by tree, so that a tree's
    nodes stay in the cache for all the rows."""
    for tree in range(len(roots)):
        for row in range(matrix.shape[0]):
            out[row, tree] = _leaf(matrix, row, roots[tree], links, threshold, missing_left)


@_compiled
def _sum_rows(
    matrix: np.ndarray,
    trees: np.ndarray,
    roots: np.ndarray,
    links: np.ndarray,
    threshold: np.ndarray,
    missing_left: np.ndarray,
    values: np.ndarray,
    out: np.ndarray,
) -> None:
    """out[row] += values[leaf] for each tree of `trees` in turn (out holds the start values)."""
    for tree in trees:
        for row in range(matrix.shape[0]):
            leaf = _leaf(matrix, row, roots[tree], links, threshold, missing_left)
            for output in range(values.shape[1]):
                out[row, output] += values[leaf, output]


@functools.cache  # its callers (every flattening, the multi-model start) need it once
def compile_walk() -> None:
    """Compiles the walks for float32 and float64 features and values, or reads them from numba's
    cache (0.25-0.5 s, once per process). Called when trees are flattened, and when a multi-model
    endpoint starts; the image calls it at build time to fill the cache."""
    tree = FlatTrees(
        np.zeros(1, np.intp),
        np.zeros(1, np.intp),
        np.zeros(1),
        np.zeros(1, np.intp),
        np.zeros(1, np.intp),
        np.zeros(1, bool),
        1,
    )
    for cell_type in (np.float32, np.float64):  # XGBoost: float32 both; the forest: 32 and 64
        row = np.zeros((1, 1), cell_type)
        tree.leaves(row)
        for value_type in (np.float32, np.float64):
            tree.sums(row, np.zeros((1, 1), value_type), np.zeros(1, value_type))
