"""An XGBoost booster on the core's flat trees (sagecraft.flat_trees): margins for small requests.

One `inplace_predict` call costs about 170 µs however few its rows (it sets up threads and rereads
the machine's configuration each time); walking the same trees with the core's compiled loop costs a
fraction of that for a handful of rows. The margins are XGBoost's to the last bit: leaves are
reached by XGBoost's rule (`value < split`, a missing value to the default side) and summed as
XGBoost sums them, in float32, in tree order, starting from the model's base margin. When the model
loads, `flatten` compares the two on probe rows built from the model's own split values (exactly on
the splits, just beside them, missing) and returns None, leaving XGBoost to answer, for anything
that differs or that it does not handle (categorical splits, vector leaves, the dart booster).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

import xgboost as xgb
from sagecraft.flat_trees import FlatTrees

from .model_checks import tree_nodes

log = logging.getLogger(__name__)

# Up to this many rows the flat walk is faster (measured side by side, random rows, 100 trees of
# depth 6, 20 features, one thread: 1 row 5 µs against 166, 8 rows 16 against 183, 64 rows 101
# against 233, 128 rows 403 against 295).
FLAT_MAX_ROWS = 64
PROBE_ROWS = 512
SEED = 0


@dataclass(frozen=True)
class FlatBooster:
    trees: FlatTrees
    leaf_value: np.ndarray  # (n_nodes, 1) float32; zero at splits
    groups: tuple[np.ndarray, ...]  # per output group (class), its trees in boosting order
    base_margin: np.ndarray  # (n_groups,) float32
    identity_link: bool  # the prediction is the margin (regression with an identity link)

    def margins(self, matrix: np.ndarray) -> np.ndarray:
        """What `inplace_predict(matrix, predict_type="margin")` returns: (n_rows,) for one group,
        else (n_rows, n_groups). `matrix` is float32 with NaN for missing values."""
        if len(self.groups) == 1:  # trees in boosting order: every tree, no need to pick them
            return self.trees.sums(matrix, self.leaf_value, self.base_margin)[:, 0]
        out = np.empty((len(matrix), len(self.groups)), np.float32)
        for group, trees in enumerate(self.groups):
            out[:, group] = self.trees.sums(
                matrix, self.leaf_value, self.base_margin[group : group + 1], trees
            )[:, 0]
        return out


def _base_margin_candidates(base_score: float, objective: str) -> list[np.float32]:
    """The base score in margin space, as XGBoost's objective converts it, and its neighbours:
    the float32 arithmetic of C++'s logf/expf and numpy's may differ in the last place."""
    family = objective.split(":")[0]
    score = np.float32(base_score)
    with np.errstate(all="ignore"):
        if objective in ("binary:logistic", "binary:logitraw", "reg:logistic"):
            exact = [
                -np.log(np.float32(1) / score - np.float32(1)),
                np.float32(-np.log(1 / float(score) - 1)),
            ]
        elif objective in ("count:poisson", "reg:gamma", "reg:tweedie") or family == "survival":
            exact = [np.log(score), np.float32(np.log(float(score)))]
        else:
            exact = [score]
    candidates = []
    for value in exact:
        value = np.float32(value)
        candidates.append(value)
        below = above = value
        for _ in range(2):
            below = np.nextafter(below, np.float32(-np.inf))
            above = np.nextafter(above, np.float32(np.inf))
            candidates += [below, above]
    return candidates


def _probe_rows(trees: FlatTrees, n_features: int) -> np.ndarray:
    """Rows whose values sit exactly on the model's splits, just above them, or are missing, so
    that the probes take both sides of every kind of split."""
    rng = np.random.default_rng(SEED)
    splits = {
        f: (trees.threshold[~trees.is_leaf & (trees.feature == f)]).astype(np.float32)
        for f in range(n_features)
    }
    rows = rng.normal(size=(PROBE_ROWS, n_features)).astype(np.float32)
    for feature, values in splits.items():
        if not values.size:
            continue
        picked = rng.choice(values, PROBE_ROWS)
        # threshold is the float below XGBoost's split: itself, the split, or just above it.
        nudge = rng.integers(0, 3, PROBE_ROWS)
        for _ in range(2):
            picked = np.where(nudge > 0, np.nextafter(picked, np.float32(np.inf)), picked)
            nudge = nudge - 1
        rows[:, feature] = picked
    rows[rng.random(rows.shape) < 0.1] = np.nan
    return rows


def flatten(
    booster: xgb.Booster, objective: str, document: dict[str, Any] | None = None
) -> FlatBooster | None:
    """The booster as flat trees, or None (logged) when the flat margins would not be XGBoost's.
    `document` is XGBoost's JSON of the booster where the caller has it (`load_booster`)."""
    if document is None:
        document = orjson.loads(bytes(booster.save_raw("json")))
    learner = document["learner"]
    gbm = learner["gradient_booster"]
    if gbm["name"] != "gbtree":
        log.info("fast path off: the %s booster is left to XGBoost", gbm["name"])
        return None
    model = gbm["model"]
    trees = model["trees"]
    if not trees or any(any(t["split_type"]) or int(t["tree_param"]["size_leaf_vector"]) > 1 for t in trees):
        log.info("fast path off: categorical splits or vector leaves are left to XGBoost")
        return None
    flat = FlatTrees.from_trees((tree_nodes(t) for t in trees), booster.num_features())
    leaf_value = np.where(
        flat.is_leaf,
        np.concatenate([np.asarray(t["split_conditions"], np.float32) for t in trees]),
        np.float32(0),
    )[:, None]
    tree_group = np.asarray(model["tree_info"])
    n_groups = int(tree_group.max()) + 1
    groups = tuple(np.flatnonzero(tree_group == g) for g in range(n_groups))
    base_scores = orjson.loads(learner["learner_model_param"]["base_score"])
    base_scores = base_scores if isinstance(base_scores, list) else [base_scores]
    if len(base_scores) not in (1, n_groups):
        log.info("fast path off: %d base scores for %d outputs", len(base_scores), n_groups)
        return None
    probes = _probe_rows(flat, booster.num_features())
    expected = booster.inplace_predict(probes, predict_type="margin").reshape(len(probes), -1)
    base_margin = np.empty(n_groups, np.float32)
    for group, trees_of_group in enumerate(groups):
        score = base_scores[group if len(base_scores) > 1 else 0]
        for candidate in _base_margin_candidates(score, objective):
            # The same walk and float32 sums the requests get, from this base.
            margins = flat.sums(probes, leaf_value, np.array([candidate]), trees_of_group)
            if np.array_equal(margins[:, 0], expected[:, group]):
                base_margin[group] = candidate
                break
        else:
            log.info("fast path off: flat margins differ from XGBoost's on probe rows")
            return None
    link = booster.inplace_predict(probes)
    identity = n_groups == 1 and np.array_equal(link.reshape(-1), expected[:, 0])
    return FlatBooster(flat, leaf_value, groups, base_margin, identity)
