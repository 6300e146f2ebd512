"""Forgetting scenarios: which training samples form D_f (forget) and which D_r (retain).

Every scenario is deterministic for a seed and returns an Arrow table with one row per training
sample: ``index`` (position in the training split), ``label`` and ``role`` ("forget" or
"retain"). The table can be written to Parquet and read back to reproduce a run exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pydantic import Field, ValidationError

from camu.errors import CamuInputError
from camu.registry import Registry
from camu.schema import StrictModel

SPLIT_SCHEMA = pa.schema([("index", pa.int64()), ("label", pa.int64()), ("role", pa.string())])


class ScenarioError(CamuInputError):
    """An impossible forgetting request (empty forget set, unknown class, index out of range...)."""


INT64_MAX = 2**63 - 1


class ScenarioOptions(StrictModel):
    """Base of every scenario's options (unknown keys, NaN and booleans for numbers are errors)."""


class RandomOptions(ScenarioOptions):
    kind: Literal["random"] = "random"
    fraction: float = Field(gt=0, lt=1, description="fraction of the training set to forget, in (0, 1)")


class ClassesOptions(ScenarioOptions):
    kind: Literal["classes"] = "classes"
    classes: list[int | str] = Field(min_length=1, description="class ids (or names) removed entirely")


class ProportionsOptions(ScenarioOptions):
    kind: Literal["proportions"] = "proportions"
    proportions: dict[int | str, Annotated[float, Field(gt=0, le=1)]] = Field(
        min_length=1, description="class -> fraction of it forgotten, in (0, 1]")


class IndicesOptions(ScenarioOptions):
    kind: Literal["indices"] = "indices"
    path: Path = Field(description="text file (one index per line) or Parquet/Arrow file with an index column")
    column: str = Field("index", description="column holding the indices in a Parquet/Arrow file")


@dataclass(frozen=True)
class ScenarioEntry:
    options: type[ScenarioOptions]
    select: Callable[[ScenarioOptions, torch.Tensor, list[str], np.random.Generator], np.ndarray]
    description: str


SCENARIOS: Registry[ScenarioEntry] = Registry("scenario")


def _class_id(value: int | str, num_classes: int, class_names: list[str], field: str) -> int:
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        if value not in class_names:
            raise ScenarioError(f"{field}: class {value!r} is not in the dataset; classes are {class_names}")
        return class_names.index(value)
    cid = int(value)
    if not 0 <= cid < num_classes:
        raise ScenarioError(f"{field}: class {cid} is not in the dataset (classes 0..{num_classes - 1})")
    return cid


def _select_random(opt: RandomOptions, labels: torch.Tensor, names: list[str], rng: np.random.Generator) -> np.ndarray:
    if not 0 < opt.fraction < 1:
        raise ScenarioError(f"fraction: {opt.fraction} is outside (0, 1); use e.g. 0.1 for 10% random removal")
    n = len(labels)
    k = round(opt.fraction * n)
    if k == 0:
        raise ScenarioError(f"fraction: {opt.fraction} of {n} samples forgets nothing; raise the fraction")
    return np.sort(rng.choice(n, size=k, replace=False))


def _distinct_class_ids(keys: list[int | str], names: list[str], field: str) -> list[int]:
    """Class ids of ``keys`` (ids or names); a class named twice (e.g. ``3`` and ``"3"``) is an error."""
    ids = [_class_id(k, len(names), names, field) for k in keys]
    twice = sorted({names[i] for i in ids if ids.count(i) > 1})
    if twice:
        raise ScenarioError(f"{field}: class(es) {twice} are listed more than once (as {keys}); list each class once")
    return ids


def _select_classes(opt: ClassesOptions, labels: torch.Tensor, names: list[str],
                    rng: np.random.Generator) -> np.ndarray:
    ids = set(_distinct_class_ids(list(opt.classes), names, "classes"))
    if len(ids) == len(names):
        raise ScenarioError("classes: removing every class leaves nothing to retain; keep at least one class")
    chosen = np.flatnonzero(np.isin(labels.numpy(), sorted(ids)))
    if chosen.size == 0:
        raise ScenarioError(f"classes: {sorted(ids)} have no training samples; the forget set would be empty")
    return chosen


def _select_proportions(opt: ProportionsOptions, labels: torch.Tensor, names: list[str],
                        rng: np.random.Generator) -> np.ndarray:
    y = labels.numpy()
    chosen = []
    items = sorted(opt.proportions.items(), key=lambda kv: str(kv[0]))
    ids = _distinct_class_ids([k for k, _ in items], names, "proportions")
    for cid, (key, frac) in zip(ids, items):
        members = np.flatnonzero(y == cid)
        k = round(frac * members.size)
        if k:
            chosen.append(rng.choice(members, size=k, replace=False))
    if not chosen:
        raise ScenarioError("proportions: the requested fractions forget no sample; raise them")
    return np.sort(np.concatenate(chosen))


TABLE_SUFFIXES = {".parquet", ".arrow", ".feather", ".ipc"}


def read_index_file(path: Path, column: str = "index") -> np.ndarray:
    """Indices from a text file (one per line, '#' comments allowed) or an integer Parquet/Arrow column.
    Anything else (a folder, binary data, a corrupt table, nulls, floats, numbers beyond int64) is a
    ``ScenarioError`` that says what is wrong."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ScenarioError(f"path: index file {path} does not exist")
    if not path.is_file():
        raise ScenarioError(f"path: {path} is not a file; give a text file of indices or a Parquet/Arrow file")
    if path.suffix in TABLE_SUFFIXES:
        return _index_column(_read_table(path), path, column)
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise ScenarioError(f"path: {path} is binary; give one index per line as text, or a .parquet/.arrow file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ScenarioError(f"path: {path} is not UTF-8 text; give one index per line") from None
    values = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            value = int(line)
        except ValueError:
            raise ScenarioError(f"path: line {lineno} of {path} is not an integer index: {line[:40]!r}") from None
        if not -INT64_MAX <= value <= INT64_MAX:
            raise ScenarioError(f"path: line {lineno} of {path} holds {line[:40]}, beyond any training index")
        values.append(value)
    return np.asarray(values, dtype=np.int64)


def _read_table(path: Path) -> pa.Table:
    """A Parquet, Feather or Arrow IPC (file or stream) table; a corrupt one is a ``ScenarioError``."""
    from pyarrow import feather

    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        if path.suffix == ".feather":
            return feather.read_table(path)
        try:
            return pa.ipc.open_file(path).read_all()
        except pa.ArrowInvalid:
            return pa.ipc.open_stream(path).read_all()
    except (pa.ArrowException, OSError) as err:
        raise ScenarioError(f"path: {path} is not a readable {path.suffix[1:]} table ({str(err)[:200]})") from None


def _index_column(table: pa.Table, path: Path, column: str) -> np.ndarray:
    if column not in table.column_names:
        raise ScenarioError(f"column: {path} has no column {column!r}; columns are {table.column_names}")
    values = table.column(column)
    if not pa.types.is_integer(values.type):
        raise ScenarioError(f"column: {column!r} of {path} holds {values.type} values; indices must be integers "
                            f"(cast the column to int64)")
    if values.null_count:
        raise ScenarioError(f"column: {column!r} of {path} has {values.null_count} missing value(s); drop them")
    array = values.to_numpy()
    if array.size and array.dtype == np.uint64 and array.max() > INT64_MAX:
        raise ScenarioError(f"column: {column!r} of {path} holds {array.max()}, beyond any training index")
    return array.astype(np.int64)


def _select_indices(opt: IndicesOptions, labels: torch.Tensor, names: list[str],
                    rng: np.random.Generator) -> np.ndarray:
    idx = np.unique(read_index_file(opt.path, opt.column))
    if idx.size == 0:
        raise ScenarioError(f"path: {opt.path} lists no index; the forget set would be empty")
    bad = idx[(idx < 0) | (idx >= len(labels))]
    if bad.size:
        raise ScenarioError(f"path: indices {bad[:5].tolist()} are out of range for {len(labels)} training samples")
    if idx.size == len(labels):
        raise ScenarioError("path: the file lists every training sample; nothing would be retained")
    return idx


SCENARIOS.register("random", "a uniformly random fraction of the training set")(
    ScenarioEntry(RandomOptions, _select_random, "a uniformly random fraction of the training set"))
SCENARIOS.register("classes", "full removal of one or more classes")(
    ScenarioEntry(ClassesOptions, _select_classes, "full removal of one or more classes"))
SCENARIOS.register("proportions", "a given fraction of each listed class")(
    ScenarioEntry(ProportionsOptions, _select_proportions, "a given fraction of each listed class"))
SCENARIOS.register("indices", "an explicit list of training indices (text or Parquet/Arrow)")(
    ScenarioEntry(IndicesOptions, _select_indices, "an explicit list of training indices (text or Parquet/Arrow)"))


def make_split(kind: str, options: dict | ScenarioOptions, labels: torch.Tensor, class_names: list[str],
               seed: int) -> pa.Table:
    """Build the split table for scenario ``kind`` over the training ``labels``, deterministically in ``seed``."""
    entry = SCENARIOS.get(kind)
    if isinstance(options, ScenarioOptions):
        opt = options
    else:
        try:
            opt = entry.options.model_validate({"kind": kind, **options})
        except ValidationError as err:
            problems = [f"{'.'.join(map(str, e['loc'])) or kind}: {e['msg']}" for e in err.errors()]
            raise ScenarioError("; ".join(problems)) from None
    labels = labels.detach().cpu().long()
    forget = entry.select(opt, labels, class_names, np.random.default_rng(seed))
    role = np.full(len(labels), "retain", dtype=object)
    role[forget] = "forget"
    return pa.table({"index": np.arange(len(labels), dtype=np.int64), "label": labels.numpy(), "role": role},
                    schema=SPLIT_SCHEMA)


def forget_indices(split: pa.Table) -> torch.Tensor:
    """Indices of D_f in the training split."""
    return _role(split, "forget")


def retain_indices(split: pa.Table) -> torch.Tensor:
    """Indices of D_r in the training split."""
    return _role(split, "retain")


def _role(split: pa.Table, role: str) -> torch.Tensor:
    mask = np.asarray(split.column("role").to_pylist()) == role
    return torch.from_numpy(split.column("index").to_numpy()[mask].astype(np.int64))


def forgotten_classes(split: pa.Table) -> list[int]:
    """Classes whose every training sample is forgotten (class-removal scenarios)."""
    labels = split.column("label").to_numpy()
    roles = np.asarray(split.column("role").to_pylist())
    return [int(c) for c in np.unique(labels) if np.all(roles[labels == c] == "forget")]


def save_split(split: pa.Table, path: str | Path) -> Path:
    """Write the split as Parquet (reloadable with ``load_split``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(split, path)
    return path


def load_split(path: str | Path) -> pa.Table:
    """Read a split written by ``save_split``; the schema is checked."""
    table = pq.read_table(path)
    if not table.schema.equals(SPLIT_SCHEMA, check_metadata=False):
        raise ScenarioError(f"{path} is not a split table (expected columns index, label, role)")
    return table
