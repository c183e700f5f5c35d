"""Mutates a real saved model thousands of times and loads each through the real plugin, in this
process: run by tests/test_model_fuzz.py as a child process, so that a mutation that crashes the
process (a segfault in a native library, an abort) is caught there rather than here.

    python model_fuzz.py MODEL_DIR COUNT SEED PROGRESS_FILE

Before each attempt the mutation is written to PROGRESS_FILE, so whoever sees this process die knows
which one killed it. Each mutated model must load and answer every output it can (`sagecraft.hooks`
outputs), or be refused with ModelLoadError; anything else is counted as a fault. Prints one JSON
line: {"loaded": n, "refused": n, "faults": [...]}.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import random
import shutil
import struct
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ubjson

from sagecraft.errors import ModelLoadError, UnsupportedOutputError
from sagecraft.hooks import CONTRIBUTIONS, LABEL, LEAVES, PROBABILITIES, RAW_MARGIN
from sagecraft.loaded_model import LoadedModel
from sagecraft_xgboost.model_file import read_document

INTERESTING_INTEGERS = [-(2**63), -(2**31), -2, -1, 0, 1, 2, 3, 7, 255, 2**31 - 1, 2**31, 2**62]
INTERESTING_FLOATS = [float("nan"), float("inf"), -float("inf"), 1e39, -1e39, 1e308, 0.0, -0.0]


def _byte_mutation(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    kind = rng.choice(["flip", "truncate", "delete", "insert", "repeat"])
    at = rng.randrange(len(data))
    if kind == "flip":
        return data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :], f"byte {at} set"
    if kind == "truncate":
        return data[:at], f"truncated at {at}"
    if kind == "delete":
        return data[:at] + data[at + rng.randint(1, 16) :], f"bytes deleted at {at}"
    if kind == "insert":
        return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 9))) + data[
            at:
        ], f"bytes inserted at {at}"
    size = rng.randint(1, 64)
    return data[:at] + data[at : at + size] * rng.randint(2, 5) + data[at + size :], f"bytes repeated at {at}"


def _leaves(node: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every scalar, array element, array and string in a decoded document."""
    out: list[tuple] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*path, key))
            out += _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _leaves(value, (*path, index))
    elif isinstance(node, np.ndarray) and len(node):
        out += [(*path, int(i)) for i in np.random.default_rng(len(path)).integers(0, len(node), 8)]
    return out


def _get(document: Any, path: tuple) -> Any:
    for key in path:
        document = document[key]
    return document


def _interesting(value: Any, rng: random.Random) -> Any:
    if isinstance(value, (float, np.floating)):
        return rng.choice([*INTERESTING_FLOATS, float(value) * rng.choice([-1, 2, 1000000.0])])
    if isinstance(value, (bool, np.bool_)):
        return not value
    if isinstance(value, (int, np.integer)):
        return rng.choice([*INTERESTING_INTEGERS, int(value) + rng.choice([-1, 1, 100])])
    if isinstance(value, str):
        return rng.choice(
            [str(rng.choice(INTERESTING_INTEGERS)), "[1e39]", "nan", "", "x" * 100, "[0.5,0.5,0.5]", "-1"]
        )
    return None


def _structural_mutation(document: Any, rng: random.Random) -> str:
    """Changes one value, array or key of `document` in place; returns what it did."""
    paths = _leaves(document)
    # Half the time aim at the trees' node arrays, where the dangerous numbers live.
    tree_paths = [p for p in paths if "trees" in p or "nodes" in map(str, p)]
    path = rng.choice(tree_paths if tree_paths and rng.random() < 0.5 else paths)
    parent, key = _get(document, path[:-1]), path[-1]
    value = parent[key]
    if isinstance(parent, np.ndarray):
        new = _interesting(value.item(), rng)
        with np.errstate(all="ignore"):  # a wrapped value is as good a mutation as any
            parent[key] = np.array(new if new is not None else 0).astype(parent.dtype)
        return f"{'/'.join(map(str, path))} = {parent[key]!r}"
    choice = rng.random()
    if isinstance(value, np.ndarray) and len(value) and choice < 0.4:
        parent[key] = (
            value[: rng.randrange(len(value))]
            if rng.random() < 0.5
            else np.concatenate([value, value[: rng.randint(1, len(value))]])
        )
        return f"{'/'.join(map(str, path))} resized to {len(parent[key])}"
    if isinstance(parent, dict) and choice < 0.5:
        del parent[key]
        return f"{'/'.join(map(str, path))} removed"
    if isinstance(value, (dict, list)) and choice < 0.7 and value:
        other = rng.choice(paths)
        parent[key] = copy.deepcopy(_get(document, other))  # a copy: never a cycle
        return f"{'/'.join(map(str, path))} replaced by {'/'.join(map(str, other))}"
    parent[key] = _interesting(value, rng)
    return f"{'/'.join(map(str, path))} = {parent[key]!r}"


class _FileMutator:
    """A model file mutated as bytes (30% of the time) or by its structure (`structural`)."""

    file: str

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __call__(self, rng: random.Random) -> tuple[bytes, str]:
        if rng.random() < 0.3:
            return _byte_mutation(self.data, rng)
        return self.structural(rng)

    def structural(self, rng: random.Random) -> tuple[bytes, str]:
        raise NotImplementedError


class XGBoostMutator(_FileMutator):
    file = "xgboost-model.ubj"

    def structural(self, rng: random.Random) -> tuple[bytes, str]:
        document = read_document(self.data)
        what = [_structural_mutation(document, rng) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        return ubjson.dumps(document), "; ".join(what)


class BinaryMutator(_FileMutator):
    """XGBoost's old binary format (a built-in algorithm's `xgboost-model`): 32-bit fields
    (counts, child indices, split features, values) set to interesting numbers."""

    file = "xgboost-model"

    def structural(self, rng: random.Random) -> tuple[bytes, str]:
        data = bytearray(self.data)
        what = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            at = 4 + 4 * rng.randrange((len(data) - 4) // 4)
            if rng.random() < 0.7:
                value = rng.choice(INTERESTING_INTEGERS) % 2**32
                data[at : at + 4] = value.to_bytes(4, "little")
            else:
                data[at : at + 4] = struct.pack("<f", rng.choice([*INTERESTING_FLOATS[:3], 0.0, -1.0, 3.5]))
            what.append(f"bytes {at}-{at + 3} = {bytes(data[at : at + 4]).hex()}")
        return bytes(data), "; ".join(what)


class SkopsMutator:
    file = "model.skops"

    def __init__(self, data: bytes) -> None:
        self.data = data
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            self.members = {name: archive.read(name) for name in archive.namelist()}

    def _zip(self, members: dict[str, bytes]) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            for name, content in members.items():
                archive.writestr(name, content)
        return out.getvalue()

    def __call__(self, rng: random.Random) -> tuple[bytes, str]:
        choice = rng.random()
        if choice < 0.2:
            return _byte_mutation(self.data, rng)
        members = dict(self.members)
        if choice < 0.45:
            schema = json.loads(members["schema.json"])
            what = _structural_mutation(schema, rng)
            members["schema.json"] = json.dumps(schema).encode()
            return self._zip(members), f"schema: {what}"
        name = rng.choice([n for n in members if n.endswith(".npy")])
        array = np.load(io.BytesIO(members[name]), allow_pickle=False)
        if array.size == 0:
            return self._zip(members), f"{name} unchanged (empty)"
        flat = array.reshape(-1)
        index = rng.randrange(len(flat))
        field = rng.choice(array.dtype.names) if array.dtype.names else None
        cell = flat[index][field] if field else flat[index]
        new = _interesting(cell.item(), rng)
        try:
            if field:
                flat[index][field] = new
                flat[index] = flat[index]
            else:
                flat[index] = new
        except (OverflowError, ValueError, TypeError):
            pass
        if array.ndim and rng.random() < 0.1:
            array = array[: rng.randrange(max(1, len(array)))]
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        members[name] = buffer.getvalue()
        return self._zip(members), f"{name}[{index}]{'.' + field if field else ''} = {new!r}"


def _probe_rows(model: LoadedModel, rng: np.random.Generator, count: int) -> pd.DataFrame:
    columns = {}
    for feature in model.manifest.features:
        if feature.categories is not None:
            columns[feature.name] = pd.Categorical(
                rng.choice(feature.categories, count), categories=feature.categories
            )
        else:
            values = rng.normal(size=count) * 3
            values[0] = np.nan
            columns[feature.name] = values.astype(feature.type if feature.type != "category" else float)
    return pd.DataFrame(columns)


OUTPUTS = (LABEL, PROBABILITIES, RAW_MARGIN, CONTRIBUTIONS, LEAVES)


def run(model_dir: Path, count: int, seed: int, progress: Path) -> dict[str, Any]:
    mutator_type: Callable[[bytes], Any]
    if not (model_dir / "manifest.json").exists():  # a built-in algorithm's binary xgboost-model
        mutator_type = BinaryMutator
    elif json.loads((model_dir / "manifest.json").read_text())["algorithm"] == "xgboost":
        mutator_type = XGBoostMutator
    else:
        mutator_type = SkopsMutator
    original = (model_dir / mutator_type.file).read_bytes()
    mutate = mutator_type(original)
    rng = random.Random(seed)
    rows = np.random.default_rng(seed)
    loaded = refused = 0
    faults: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "model"
        shutil.copytree(model_dir, folder)
        for attempt in range(count):
            try:
                data, what = mutate(rng)
            except (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError):
                continue  # one change of several left nothing the next can work on
            progress.write_text(f"mutation {attempt}: {what}\n")
            (folder / mutate.file).write_bytes(data)
            try:
                model = LoadedModel.load(folder)
            except ModelLoadError:
                refused += 1
                continue
            except Exception as exc:  # the fault this fuzzer looks for
                faults.append(f"{what}: load raised {type(exc).__name__}: {exc}")
                continue
            # A few rows take the flat walk, many the library's own predict.
            for features, output in itertools.product(
                (_probe_rows(model, rows, 6), _probe_rows(model, rows, 600)), OUTPUTS
            ):
                try:
                    answer = model.predict(features, output)
                except UnsupportedOutputError:
                    continue
                except Exception as exc:
                    faults.append(f"{what}: predict {output} raised {type(exc).__name__}: {exc}")
                    break
                if len(answer) != len(features):
                    faults.append(f"{what}: predict {output} answered {len(answer)} rows")
            loaded += 1
    progress.write_text("done\n")
    return {"loaded": loaded, "refused": refused, "faults": faults}


if __name__ == "__main__":
    folder, count, seed, progress = sys.argv[1:5]
    print(json.dumps(run(Path(folder), int(count), int(seed), Path(progress))))
