"""The official CaMU code and camu-orch's CaMU side by side: same original weights, same forget sets, same CPU.

Get the official code (MIT, github ShaofeiShen768/CaMU) from the local mirror; the mirror lacks the
repository's data blobs, so check out only the code (a plain ``git clone`` copies ``CaMU/`` too but exits
with "unable to checkout working tree" on those blobs):

    git clone --no-checkout /work/.mirror/ShaofeiShen768+CaMU/repo /tmp/camu-official
    git -C /tmp/camu-official checkout HEAD -- CaMU
    python benchmarks/official_side_by_side.py --official /tmp/camu-official                 # the benchmark
    python benchmarks/official_side_by_side.py --official /tmp/camu-official --limit-train 300 --seeds 2  # smoke

What it does, per scenario (Fashion-MNIST: ``class`` = class 0 removed, ``random`` = random 10%):

1. Copies the official ``CaMU/*.py`` into ``WORK/official/SCENARIO/CaMU`` and applies the minimal text
   substitutions it needs to run here (printed as a unified diff at the start of the output): CUDA -> CPU,
   config.py set from the official file's own commented block for the scenario, DataLoader workers 0,
   ``torch.load(..., weights_only=False)`` for its pickled ``original.pt``, the unused ``torchsummary``
   import (not installed) dropped, its seed loop reading the seed from the environment, and a JSON export
   of each seed's D_f / D_s indices, metrics and ``time_taken``. Its data root ``../data`` is a scratch
   folder with the idx files of /usr/share/datasets/fashion-mnist (decompressed: torchvision reads them so).
2. The original: the paper's CNN trained once with camu's official recipe (``TrainRecipe`` defaults,
   ``camu.train_classifier``) on the full training set, cached as safetensors in ``--work`` (or
   ``--original FILE.safetensors``), and for the official side the official ``Model.CNN`` with those
   weights (keys mapped, shapes checked), ``torch.save``d whole as its ``../original.pt``.
   Both sides see the official code's inputs, raw ToTensor pixels in [0, 1] (camu's own ``fashion_mnist``
   loader, its normalisation undone), so that one set of weights is the same function on both sides.
3. Per seed, alternately: the official ``main.py`` for that seed (a subprocess), then camu-orch's CaMU
   (``run_method('camu', official preset for the scenario kind)``, in this process, as
   ``orchestrator.worker.unlearning.unlearn_worker`` runs it) on the official run's D_f fed as an ``indices``
   scenario, evaluated with ``camu.evaluate`` on the full sets (``selection_fraction=0``, as the
   official code reports). Both sides use ``--threads`` torch threads (``OMP_NUM_THREADS`` for the
   official process). Times: the official ``time_taken`` (counterfactual construction + removal) and,
   for camu-orch, the wall time of the ``run_method`` call (the same part: pairing, counterfactuals,
   frozen targets and the unlearning epochs).
4. One table per scenario: mean +- sample std per side, difference (camu-orch - official), tolerance
   max(floor, 2 x SE of the difference) and whether the means agree (``agree``); accuracies in points
   (floor 1), the official MIA as the official code reports it, a fraction in [0, 1] (floor 0.02); and
   the time ratio official / camu-orch against the goal (>= 1.5x). Every per-seed number goes to
   ``WORK/side_by_side[-limitN].json``.

``--limit-train N`` is a smoke mode, not the benchmark: both sides get a Fashion-MNIST cut to its first N
training images (truncated idx files in the scratch data root); the test set stays whole, since the official
attack takes its first 4,000 test images as non-members and the next |D_f| as held-out samples.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import gzip
import importlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FMNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {"train-images-idx3-ubyte": "train", "train-labels-idx1-ubyte": "train",
             "t10k-images-idx3-ubyte": "test", "t10k-labels-idx1-ubyte": "test"}
OFFICIAL_FILES = ("Model.py", "config.py", "dataset.py", "main.py", "prepare.py", "remove.py", "train.py", "utils.py")
OFFICIAL_MODULES = tuple(f[:-3] for f in OFFICIAL_FILES)
CONFIG_KEYS = ("DATASET", "DATATYPE", "CLASS_COUNT", "IMPAIR_EPOCHS", "IMPAIR_LR", "KL_LR")
FORGOTTEN_LABEL = 0  # the official main.py's `for label in [0]`
ACCURACY_FLOOR, MIA_FLOOR, SPEED_GOAL = 1.0, 0.02, 1.5

# our mnist_cnn -> the official Model.CNN
KEY_MAP = {"features.0.weight": "conv1.0.weight", "features.0.bias": "conv1.0.bias",
           "features.3.weight": "conv2.0.weight", "features.3.bias": "conv2.0.bias",
           "embed.weight": "fc1.weight", "embed.bias": "fc1.bias",
           "head.0.weight": "fc2.0.weight", "head.0.bias": "fc2.0.bias",
           "head.1.weight": "fc2.1.weight", "head.1.bias": "fc2.1.bias"}


@dataclass(frozen=True)
class Scenario:
    name: str
    datatype: str          # the official config's DATATYPE
    config_block: str      # the official config.py comment that heads the scenario's settings
    kind: str              # camu's scenario kind whose official preset applies
    title: str


SCENARIOS = {
    "class": Scenario("class", "class", "# class removal for MNIST and Fashion-MNIST", "classes",
                      "Fashion-MNIST, class 0 removed"),
    "random": Scenario("random", "random", "# random data removal for MNIST and Fashion-MNIST", "random",
                       "Fashion-MNIST, random 10% removed"),
}

METRICS = (  # key, label, floor (None: no agreement test)
    ("ra", "RA (%)", ACCURACY_FLOOR),
    ("fa", "FA (%)", ACCURACY_FLOOR),
    ("ta", "TA (%)", ACCURACY_FLOOR),
    ("ta_retained", "TA retained classes 1-9 (%)", ACCURACY_FLOOR),
    ("ta_forgotten", "TA forgotten class 0 (%)", ACCURACY_FLOOR),
    ("mia_official", "MIA official (fraction)", MIA_FLOOR),
    ("unlearn_seconds", "unlearning seconds", None),
)


class SideBySideError(RuntimeError):
    """Something this benchmark cannot do; the message says what and how to fix it."""


# ----------------------------------------------------------------------------- the rule
def agree(ours: list[float], theirs: list[float], floor: float) -> tuple[bool, float, float]:
    """Whether two sets of per-seed numbers have the same mean: (agree, difference, tolerance).

    difference = mean(ours) - mean(theirs); tolerance = max(floor, 2 * sqrt(s1^2/n1 + s2^2/n2)) with the
    sample standard deviations (n - 1); a side with a single value contributes no spread. Agreement is
    |difference| <= tolerance. Any NaN (or an empty side) is (False, nan, nan).
    """
    values = list(ours) + list(theirs)
    if not ours or not theirs or any(math.isnan(v) for v in values):
        return False, float("nan"), float("nan")
    diff = statistics.fmean(ours) - statistics.fmean(theirs)
    se = math.sqrt(sum(statistics.variance(v) / len(v) for v in (ours, theirs) if len(v) > 1))
    tolerance = max(floor, 2.0 * se)
    return abs(diff) <= tolerance, diff, tolerance


def time_ratio(official: list[float], ours: list[float]) -> float:
    """Mean official seconds / mean camu-orch seconds (> 1: camu-orch is faster)."""
    return statistics.fmean(official) / statistics.fmean(ours)


# ----------------------------------------------------------------------------- the official code, patched
@dataclass(frozen=True)
class Change:
    file: str
    old: str
    new: str
    why: str
    regex: bool = False


def config_block(text: str, header: str) -> dict[str, tuple[Any, str, int]]:
    """The ``# KEY = value`` lines under ``header`` in the official config.py: KEY -> (value, text, line)."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == header)
    except StopIteration:
        raise SideBySideError(f"config.py has no block {header!r}; is --official the CaMU checkout?") from None
    found: dict[str, tuple[Any, str, int]] = {}
    for i in range(start + 1, len(lines)):
        line = lines[i].strip()
        if not line:
            continue
        m = re.fullmatch(r"#\s*([A-Z_]+)\s*=\s*(\S+)", line)
        if m is None:
            break  # the next block's header, or code
        found[m.group(1)] = (ast.literal_eval(m.group(2)), m.group(2), i + 1)
    missing = [k for k in CONFIG_KEYS if k not in found]
    if missing:
        raise SideBySideError(f"config.py block {header!r} lacks {missing}")
    return found


def official_settings(official: Path, scenario: Scenario) -> dict[str, tuple[Any, str, int]]:
    """The scenario's settings as the official config.py's own commented block gives them, with DATASET
    set to 'Fashion' (the block is 'for MNIST and Fashion-MNIST'; 'Fashion' is Fashion-MNIST in the
    official dataset.py)."""
    block = config_block((official / "CaMU" / "config.py").read_text(), scenario.config_block)
    if block["DATATYPE"][0] != scenario.datatype:
        raise SideBySideError(f"config.py block {scenario.config_block!r} has DATATYPE {block['DATATYPE'][0]!r}")
    _, _, line = block["DATASET"]
    block["DATASET"] = ("Fashion", "'Fashion'", line)
    return block


EXPORT = """\
            # [side-by-side] export this seed's D_f / D_s indices, metrics and time as JSON
            import json
            with open(os.path.join(os.environ['CAMU_SBS_EXPORT'], 'seed%d.json' % seed), 'w') as export_file:
                json.dump({'seed': seed, 'threads': torch.get_num_threads(),
                           'forget_indices': [int(i) for i in loaders['unlearn'].dataset.indices],
                           'sample_indices': [int(i) for i in loaders['sample'].dataset.indices],
                           'ra': acc_re_tr, 'fa': acc_fr_tr, 'ta': acc_ts, 'ta_retained': acc_re_ts,
                           'ta_forgotten': acc_fr_ts, 'mia_official': float(acc_re),
                           'unlearn_seconds': time_taken}, export_file)
"""


def changes(settings: dict[str, tuple[Any, str, int]]) -> list[Change]:
    """Every change made to the official code, each the least that lets it run here and report."""
    out = [Change(f, ".cuda()", ".cpu()", "CPU: no CUDA device here") for f in ("prepare.py", "remove.py", "train.py")]
    out += [
        Change("Model.py", "import torchsummary\n", "# import torchsummary  (side-by-side: unused, not installed)\n",
               "torchsummary is imported but never used, and is not installed here"),
        Change("dataset.py", "num_workers=3", "num_workers=0",
               "DataLoader workers would be processes beyond the shared thread budget"),
        Change("main.py", "num_workers=3", "num_workers=0",
               "DataLoader workers would be processes beyond the shared thread budget"),
        Change("main.py", "torch.load(model_savepath)", "torch.load(model_savepath, weights_only=False)",
               "torch >= 2.6 loads weights only by default; original.pt is a pickled module"),
        Change("main.py", "for seed in range(5):",
               "for seed in [int(s) for s in os.environ['CAMU_SBS_SEEDS'].split(',')]:",
               "one seed per process, so that the two sides alternate seed by seed"),
        Change("main.py", "            results_lists[6].append(acc_re)\n",
               "            results_lists[6].append(acc_re)\n" + EXPORT,
               "export D_f indices, metrics and time as JSON"),
    ]
    for key in CONFIG_KEYS:
        out.append(Change("config.py", rf"^{key} = .*$", f"{key} = {settings[key][1]}",
                          f"config.py line {settings[key][2]} (the scenario's commented block)", regex=True))
    return out


def patched_sources(official: Path, settings: dict[str, tuple[Any, str, int]]) -> dict[str, tuple[str, str]]:
    """file -> (official text, patched text) for every official CaMU/*.py this benchmark needs."""
    folder = official / "CaMU"
    missing = [f for f in OFFICIAL_FILES if not (folder / f).is_file()]
    if missing:
        raise SideBySideError(f"{folder} lacks {missing}; give --official the folder holding CaMU/ (see "
                              f"`python {Path(__file__).name} --help` for the clone command)")
    texts = {f: (folder / f).read_text() for f in OFFICIAL_FILES}
    patched = dict(texts)
    for change in changes(settings):
        text = patched[change.file]
        if change.regex:
            new, count = re.subn(change.old, change.new, text, flags=re.MULTILINE)
            if count != 1:
                raise SideBySideError(f"{change.file}: expected one line matching {change.old!r}, found {count}")
        else:
            if change.old not in text:
                raise SideBySideError(f"{change.file}: {change.old!r} not found; the official code changed")
            new = text.replace(change.old, change.new)
        patched[change.file] = new
    return {f: (texts[f], patched[f]) for f in OFFICIAL_FILES}


def unified_diff(sources: dict[str, tuple[str, str]]) -> str:
    """One unified diff (official -> as run) of every changed file."""
    out = []
    for f, (a, b) in sources.items():
        for line in difflib.unified_diff(a.splitlines(keepends=True), b.splitlines(keepends=True),
                                         f"official/CaMU/{f}", f"run/CaMU/{f}"):
            out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def write_official(sources: dict[str, tuple[str, str]], folder: Path, data_root: Path) -> Path:
    """``folder/CaMU/*.py`` (patched), ``folder/data`` -> ``data_root``, ``folder/CaMU/Results``; returns
    the code folder (the official code runs from it: ``../data``, ``../original.pt``)."""
    code = folder / "CaMU"
    if code.exists():
        shutil.rmtree(code)
    code.mkdir(parents=True)
    (code / "Results").mkdir()
    for name, (_, text) in sources.items():
        (code / name).write_text(text)
    link = folder / "data"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(data_root.resolve(), target_is_directory=True)
    return code


@contextlib.contextmanager
def official_modules(code: Path) -> Iterator[Any]:
    """The official ``Model`` module imported from ``code`` (top-level names as the official code uses
    them, so that a pickled ``Model.CNN`` loads there); the names are released afterwards."""
    saved = {n: sys.modules.pop(n) for n in OFFICIAL_MODULES if n in sys.modules}
    sys.path.insert(0, str(code))
    try:
        yield importlib.import_module("Model")
    finally:
        sys.path.remove(str(code))
        for name in OFFICIAL_MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def to_official_state(ours: dict[str, torch.Tensor], official_model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our mnist_cnn state dict with the official CNN's keys; every key and shape must match."""
    target = official_model.state_dict()
    if set(ours) != set(KEY_MAP) or set(KEY_MAP.values()) != set(target):
        raise SideBySideError(f"state dicts do not map: ours {sorted(ours)}, official {sorted(target)}")
    mapped = {KEY_MAP[k]: v.detach().cpu().contiguous() for k, v in ours.items()}
    bad = [f"{k}: ours {tuple(v.shape)} vs official {tuple(target[k].shape)}" for k, v in mapped.items()
           if v.shape != target[k].shape]
    if bad:
        raise SideBySideError("the weights do not fit the official Model.CNN: " + "; ".join(bad))
    return mapped


def save_official_original(code: Path, state: dict[str, torch.Tensor], path: Path) -> None:
    """The official ``Model.CNN()`` holding ``state`` (our keys), saved whole with ``torch.save`` to ``path``."""
    with official_modules(code) as model_module:
        model = model_module.CNN()
        model.load_state_dict(to_official_state(state, model), strict=True)
        torch.save(model.eval(), path)


def run_official(code: Path, seed: int, threads: int, log: Path) -> dict[str, Any]:
    """The patched official main.py for one seed; returns its exported JSON."""
    export = code.parent / "export"
    export.mkdir(exist_ok=True)
    (export / f"seed{seed}.json").unlink(missing_ok=True)
    env = {**os.environ, "CAMU_SBS_SEEDS": str(seed), "CAMU_SBS_EXPORT": str(export.resolve()),
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": "",
           "PYTHONDONTWRITEBYTECODE": "1"}
    with log.open("w") as fh:
        rc = subprocess.run([sys.executable, "main.py"], cwd=code, env=env, stdout=fh, stderr=subprocess.STDOUT,
                            check=False).returncode
    out = export / f"seed{seed}.json"
    if rc != 0 or not out.exists():
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SideBySideError(f"the official code failed for seed {seed} (exit {rc}); {log}:\n{tail}")
    return json.loads(out.read_text())


# ----------------------------------------------------------------------------- data and the original
def data_root(work: Path, limit: int | None) -> Path:
    """``work/data-TAG/FashionMNIST/raw`` with the four idx files, decompressed (torchvision reads them so),
    the training files cut to their first ``limit`` images in smoke mode."""
    root = work / ("data-full" if limit is None else f"data-limit{limit}")
    raw = root / "FashionMNIST" / "raw"
    marker, layout = root / "layout.json", json.dumps({"source": str(FMNIST), "train_limit": limit, "test": "all"})
    if marker.exists() and marker.read_text() == layout and all((raw / f).exists() for f in IDX_FILES):
        return root
    raw.mkdir(parents=True, exist_ok=True)
    for name, split in IDX_FILES.items():
        source = FMNIST / f"{name}.gz"
        if not source.exists():
            raise SideBySideError(f"{source} is missing (Debian's Fashion-MNIST folder)")
        with gzip.open(source, "rb") as fh:
            data = fh.read()
        keep = limit if split == "train" else None
        if keep is not None:
            ndim = data[3]
            dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
            keep = min(keep, dims[0])
            item = int(np.prod(dims[1:])) if ndim > 1 else 1
            header = data[:4] + keep.to_bytes(4, "big") + data[8: 4 + 4 * ndim]
            data = header + data[4 + 4 * ndim: 4 + 4 * ndim + keep * item]
        tmp = raw / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, raw / name)
    marker.write_text(layout)
    return root


def pixel_data(root: Path) -> Any:
    """camu's ``fashion_mnist`` from ``root`` in the official code's input space: ToTensor pixels in [0, 1]
    (the stored bytes k as k/255, bit-identical to torchvision's ToTensor)."""
    from camu.data import ImageData, load_dataset
    from camu.data.sources import TensorSource

    data = load_dataset("fashion_mnist", {"root": str(root)})

    def raw(source: TensorSource) -> TensorSource:
        return TensorSource(source.images.float() / 255.0, source.labels)  # uint8 stored: exact

    return ImageData(data.name, raw(data.train), raw(data.test), data.num_classes, data.in_channels,
                     data.image_size, data.class_names, (0.0,), (1.0,))


def new_model(data: Any) -> torch.nn.Module:
    """The paper's CNN as the orchestrator's workers build it (seed 0 before any weights are loaded)."""
    from camu import build_model

    torch.manual_seed(0)
    return build_model("mnist_cnn", {}, data.in_channels, data.num_classes, data.image_size)


def original_weights(args: argparse.Namespace, data: Any, work: Path) -> tuple[Path, str]:
    """Our original's safetensors: ``--original``, or trained once with camu's official recipe and cached."""
    from camu import TrainRecipe, train_classifier
    from camu.weights import load_weights, save_weights

    if args.original:
        path = Path(args.original)
        load_weights(new_model(data), path)  # fails clearly when it is not mnist_cnn weights
        return path, f"loaded {path}"
    recipe = TrainRecipe()
    tag = "full" if args.limit_train is None else f"limit{args.limit_train}"
    path = work / f"original-{tag}.safetensors"
    meta = work / f"original-{tag}.json"
    if path.exists() and meta.exists() and json.loads(meta.read_text()).get("recipe") == recipe.model_dump():
        return path, f"cached {path} ({json.loads(meta.read_text())['train_seconds']:.0f} s to train)"
    model = new_model(data)
    torch.manual_seed(recipe.seed)
    print(f"training the original: mnist_cnn, {len(data.train)} images, recipe {recipe.model_dump()}", flush=True)

    def on_epoch(epoch: int, metrics: dict[str, float], state: dict[str, Any]) -> None:
        print(f"  epoch {epoch + 1}/{recipe.epochs}: loss {metrics['train_loss']:.4f}", flush=True)

    stats = train_classifier(model, data.train, torch.arange(len(data.train)), recipe, torch.device("cpu"),
                             on_epoch=on_epoch)
    save_weights(model, path)
    meta.write_text(json.dumps({"recipe": recipe.model_dump(), "train_seconds": stats.seconds,
                                "images": len(data.train)}))
    return path, f"trained {path} in {stats.seconds:.0f} s"


# ----------------------------------------------------------------------------- camu-orch's side
def run_ours(data: Any, original_path: Path, forget: list[int], scenario: Scenario, seed: int,
             work: Path) -> dict[str, Any]:
    """camu-orch's CaMU at its official preset on the official run's D_f (an ``indices`` scenario), run and
    evaluated as ``orchestrator.worker.unlearning.unlearn_worker`` / ``assess`` do, on the CPU, in this process."""
    from camu import evaluate, forget_indices, make_split, official_params, retain_indices, run_method
    from camu.methods import UnlearnContext
    from camu.weights import load_weights

    index_file = work / "indices" / f"{scenario.name}-seed{seed}.txt"
    index_file.parent.mkdir(parents=True, exist_ok=True)
    index_file.write_text("".join(f"{i}\n" for i in sorted(forget)))
    split = make_split("indices", {"path": str(index_file)}, data.train.labels, data.class_names, seed)
    forget_t, retain_t = forget_indices(split), retain_indices(split)
    if len(forget_t) != len(forget):
        raise SideBySideError(f"seed {seed}: the official D_f has repeated indices ({len(forget)} vs {len(forget_t)})")
    original = load_weights(new_model(data), original_path)
    params = official_params(data.name, scenario.kind)
    device = torch.device("cpu")
    ctx = UnlearnContext(original, data, forget_t, retain_t, device, seed=seed)
    start = time.perf_counter()
    result = run_method("camu", params, ctx)
    seconds = time.perf_counter() - start
    ev = evaluate(result.model, data, split, device, seed=seed, members=result.members, selection_fraction=0.0)
    metrics = {k: ev.metrics[k] for k in ("ra", "fa", "ta", "ta_retained", "ta_forgotten", "mia_official")}
    if scenario.kind != "classes":  # no class is forgotten: TA on label 0 vs the rest, as the official main.py
        metrics.update(label_split_ta(ev.samples, FORGOTTEN_LABEL))
    return {**metrics, "unlearn_seconds": seconds, "loop_seconds": result.seconds,
            "forget_size": len(forget_t), "members": len(result.members) if result.members is not None else None}


def label_split_ta(samples: Any, label: int) -> dict[str, float]:
    """Test accuracy (%) on the classes other than ``label`` and on ``label``, from camu's per-sample table."""
    table = samples.to_pandas()
    test = table[table["split"] == "test"]
    right = test["prediction"] == test["label"]
    gone = test["label"] == label
    return {"ta_retained": 100.0 * float(right[~gone].mean()), "ta_forgotten": 100.0 * float(right[gone].mean())}


# ----------------------------------------------------------------------------- report
def mean_std(values: list[float], digits: int) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} +- {sd:.{digits}f}"


def table(scenario: Scenario, runs: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    rows, summary = [], []
    head = f"{'metric':<30}{'official':>20}{'camu-orch':>20}{'diff':>10}{'tol':>9}  agree"
    rows.append(head)
    rows.append("-" * len(head))
    for key, label, floor in METRICS:
        theirs = [r["official"][key] for r in runs]
        ours = [r["ours"][key] for r in runs]
        digits = 3 if key == "mia_official" else 2
        if floor is None:
            diff = statistics.fmean(ours) - statistics.fmean(theirs)
            rows.append(f"{label:<30}{mean_std(theirs, digits):>20}{mean_std(ours, digits):>20}"
                        f"{diff:>10.{digits}f}{'-':>9}  -")
            continue
        ok, diff, tol = agree(ours, theirs, floor)
        rows.append(f"{label:<30}{mean_std(theirs, digits):>20}{mean_std(ours, digits):>20}"
                    f"{diff:>10.{digits}f}{tol:>9.{digits}f}  {'yes' if ok else 'NO'}")
        summary.append({"metric": key, "official": theirs, "ours": ours, "difference": diff, "tolerance": tol,
                        "floor": floor, "agree": ok})
    ratio = time_ratio([r["official"]["unlearn_seconds"] for r in runs], [r["ours"]["unlearn_seconds"] for r in runs])
    rows.append(f"time ratio official / camu-orch: {ratio:.2f}x (goal >= {SPEED_GOAL}x: "
                f"{'met' if ratio >= SPEED_GOAL else 'NOT met'})")
    summary.append({"metric": "time_ratio", "value": ratio, "goal": SPEED_GOAL, "met": ratio >= SPEED_GOAL})
    return "\n".join(rows), summary


def official_commit(official: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(official), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=False, timeout=10)
    except OSError:
        return None
    return out.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", required=True, type=Path, help="the official checkout (the folder holding CaMU/)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/camu-side-by-side"),
                    help="scratch and cache folder (data, originals, patched code, logs, JSON results)")
    ap.add_argument("--original", default=None, help="our original as safetensors (default: train it, cached)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (the official main.py: range(5))")
    ap.add_argument("--scenarios", default="class,random", help="comma list of: " + ", ".join(SCENARIOS))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads of both sides")
    ap.add_argument("--limit-train", type=int, default=None,
                    help="SMOKE MODE, not the benchmark: the first N training images only")
    args = ap.parse_args(argv)
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        ap.error(f"--scenarios: unknown {unknown}; choose from {list(SCENARIOS)}")
    if args.seeds < 1 or args.threads < 1 or (args.limit_train is not None and args.limit_train < 10):
        ap.error("--seeds and --threads must be >= 1, --limit-train >= 10")
    torch.set_num_threads(args.threads)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    smoke = args.limit_train is not None
    banner = (f"SMOKE MODE (--limit-train {args.limit_train}): first {args.limit_train} training images only "
              f"(all 10,000 test images). NOT THE BENCHMARK." if smoke else
              "Benchmark: full Fashion-MNIST (60,000 training, 10,000 test images).")
    print(banner)
    print(f"official code: {args.official.resolve()} (commit {official_commit(args.official) or 'unknown'}); "
          f"torch threads per side: {args.threads}; seeds 0..{args.seeds - 1}; CPU")

    scenarios = [SCENARIOS[n] for n in names]
    settings = {s.name: official_settings(args.official, s) for s in scenarios}
    sources = {s.name: patched_sources(args.official, settings[s.name]) for s in scenarios}
    print("\n=== changes made to the official code (unified diff; config.py differs per scenario)")
    first = sources[scenarios[0].name]
    print(unified_diff({f: first[f] for f in OFFICIAL_FILES if f != "config.py"}), end="")
    for s in scenarios:
        print(f"# config.py for the {s.name} scenario")
        print(unified_diff({"config.py": sources[s.name]["config.py"]}), end="")

    root = data_root(work, args.limit_train)
    data = pixel_data(root)
    original_path, how = original_weights(args, data, work)
    print(f"\noriginal: {how}")
    from camu import official_params
    from camu.weights import read_state_dict

    state = read_state_dict(original_path)
    record: dict[str, Any] = {"mode": "smoke" if smoke else "benchmark", "limit_train": args.limit_train,
                              "threads": args.threads, "seeds": args.seeds, "official": str(args.official.resolve()),
                              "official_commit": official_commit(args.official), "original": str(original_path),
                              "scenarios": {}}
    for s in scenarios:
        folder = work / "official" / s.name
        code = write_official(sources[s.name], folder, root)
        save_official_original(code, state, folder / "original.pt")
        ours_params = official_params(data.name, s.kind).model_dump()
        used = {k: v[0] for k, v in settings[s.name].items()}
        print(f"\n=== {s.name}: {s.title}")
        print("official config.py (" + s.config_block.lstrip("# ") + "): "
              + ", ".join(f"{k}={v[1]} (line {v[2]})" for k, v in settings[s.name].items()))
        print(f"camu-orch preset official ({s.kind}): epochs={ours_params['epochs']}, "
              f"lr_out={ours_params['lr_out']}, lr_rep={ours_params['lr_rep']}, batch={ours_params['batch_size']}, "
              f"noise U[0,{ours_params['noise_scale']})")
        runs = []
        for seed in range(args.seeds):
            theirs = run_official(code, seed, args.threads, folder / f"seed{seed}.log")
            if theirs["threads"] != args.threads:
                raise SideBySideError(f"the official process ran {theirs['threads']} torch threads, not {args.threads}")
            ours = run_ours(data, original_path, theirs["forget_indices"], s, seed, work)
            print(f"  seed {seed}: |D_f| {len(theirs['forget_indices'])}; official {theirs['unlearn_seconds']:.2f} s, "
                  f"FA {theirs['fa']:.2f}, TA {theirs['ta']:.2f}; camu-orch {ours['unlearn_seconds']:.2f} s, "
                  f"FA {ours['fa']:.2f}, TA {ours['ta']:.2f}", flush=True)
            runs.append({"seed": seed, "official": theirs, "ours": ours})
        text, summary = table(s, runs)
        print(f"\n{s.name}: {s.title}, {args.seeds} seeds, mean +- sample std; diff = camu-orch - official; "
              f"agree: |diff| <= max(floor, 2 SE)")
        print(text)
        record["scenarios"][s.name] = {"official_config": used, "camu_params": ours_params, "runs": runs,
                                       "summary": summary, "diff": unified_diff(sources[s.name])}
    out = work / ("side_by_side.json" if not smoke else f"side_by_side-limit{args.limit_train}.json")
    out.write_text(json.dumps(record))
    print(f"\nper-seed numbers: {out}")
    if smoke:
        print(banner)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SideBySideError as err:
        sys.exit(f"official_side_by_side: {err}")
