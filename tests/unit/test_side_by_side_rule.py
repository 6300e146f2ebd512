"""benchmarks/official_side_by_side.py: the agreement rule against hand-computed cases, and the weight
mapping between camu's mnist_cnn and the official CaMU Model.CNN (from the local mirror, when present)."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks.official_side_by_side import (
    ACCURACY_FLOOR,
    MIA_FLOOR,
    SCENARIOS,
    agree,
    official_modules,
    official_settings,
    patched_sources,
    time_ratio,
    to_official_state,
    write_official,
)

MIRROR = Path("/work/.mirror/ShaofeiShen768+CaMU/repo")


def test_equal_means_agree():
    ok, diff, tol = agree([90.0, 91.0, 92.0], [92.0, 91.0, 90.0], ACCURACY_FLOOR)
    assert ok and diff == 0.0
    # spread: s = 1 on both sides, SE = sqrt(1/3 + 1/3) = 0.8165, 2 SE = 1.633 > floor
    assert tol == pytest.approx(2 * math.sqrt(2 / 3))


def test_the_one_point_floor_with_tiny_spread():
    theirs = [90.0, 90.0, 90.0, 90.0, 90.0]
    ok, diff, tol = agree([90.9, 90.9, 90.9, 90.9, 90.9], theirs, ACCURACY_FLOOR)
    assert ok and diff == pytest.approx(0.9) and tol == 1.0
    ok, diff, tol = agree([91.1, 91.1, 91.1, 91.1, 91.1], theirs, ACCURACY_FLOOR)
    assert not ok and diff == pytest.approx(1.1) and tol == 1.0
    # tiny spread (s = 0.0071 on one side: 2 SE = 0.0063) leaves the floor in charge
    ok, _, tol = agree([91.09, 91.11, 91.10, 91.10, 91.10], theirs, ACCURACY_FLOOR)
    assert not ok and tol == 1.0
    ok, _, tol = agree([90.89, 90.91, 90.90, 90.90, 90.90], theirs, ACCURACY_FLOOR)
    assert ok and tol == 1.0


def test_a_large_spread_widens_the_tolerance_to_two_standard_errors():
    ours = [80.0, 84.0, 88.0]     # mean 84, sample variance 16
    theirs = [85.0, 87.0, 89.0]   # mean 87, sample variance 4
    se = math.sqrt(16 / 3 + 4 / 3)  # 2.582
    ok, diff, tol = agree(ours, theirs, ACCURACY_FLOOR)
    assert diff == pytest.approx(-3.0) and tol == pytest.approx(2 * se)  # 5.164
    assert ok
    ok, diff, tol = agree([74.0, 78.0, 82.0], theirs, ACCURACY_FLOOR)  # diff -9 > 5.164
    assert not ok and diff == pytest.approx(-9.0) and tol == pytest.approx(2 * se)
    # unequal counts: SE = sqrt(16/3 + 4/5)
    ok, diff, tol = agree(ours, [85.0, 87.0, 89.0, 86.0, 88.0], ACCURACY_FLOOR)
    var = sum((x - 87.0) ** 2 for x in (85, 87, 89, 86, 88)) / 4  # 2.5
    assert tol == pytest.approx(2 * math.sqrt(16 / 3 + var / 5)) and ok


def test_the_mia_floor_is_two_hundredths():
    assert MIA_FLOOR == 0.02
    theirs = [0.230, 0.230, 0.230]
    ok, diff, tol = agree([0.249, 0.249, 0.249], theirs, MIA_FLOOR)
    assert ok and diff == pytest.approx(0.019) and tol == 0.02
    ok, diff, tol = agree([0.251, 0.251, 0.251], theirs, MIA_FLOOR)
    assert not ok and diff == pytest.approx(0.021)
    ok, _, tol = agree([0.20, 0.26, 0.29], theirs, MIA_FLOOR)  # s = 0.04583: 2 SE = 0.0529
    assert tol == pytest.approx(2 * math.sqrt(0.0021 / 3)) and ok


def test_single_values_nans_and_the_time_ratio():
    assert agree([90.0], [90.5], ACCURACY_FLOOR) == (True, -0.5, 1.0)  # one seed: no spread, the floor
    ok, diff, tol = agree([90.0, float("nan")], [90.0, 90.0], ACCURACY_FLOOR)
    assert not ok and math.isnan(diff) and math.isnan(tol)
    assert time_ratio([30.0, 30.0], [10.0, 20.0]) == pytest.approx(2.0)


@pytest.fixture(scope="module")
def official_checkout(tmp_path_factory):
    if not MIRROR.exists():
        pytest.skip(f"no official CaMU mirror at {MIRROR}")
    dest = tmp_path_factory.mktemp("camu-official") / "repo"
    # the mirror lacks the repository's data blobs: check out the code only
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(MIRROR), str(dest)], check=True, timeout=120)
    subprocess.run(["git", "-C", str(dest), "checkout", "-q", "HEAD", "--", "CaMU"], check=True, timeout=120)
    yield dest
    shutil.rmtree(dest, ignore_errors=True)


def test_official_settings_come_from_its_own_config_blocks(official_checkout):
    cls = official_settings(official_checkout, SCENARIOS["class"])
    rnd = official_settings(official_checkout, SCENARIOS["random"])
    assert {k: v[0] for k, v in cls.items()} == {"DATASET": "Fashion", "DATATYPE": "class", "CLASS_COUNT": 10,
                                                 "IMPAIR_EPOCHS": 2, "IMPAIR_LR": 0.001, "KL_LR": 0.0004}
    assert {k: v[0] for k, v in rnd.items()} == {"DATASET": "Fashion", "DATATYPE": "random", "CLASS_COUNT": 10,
                                                 "IMPAIR_EPOCHS": 10, "IMPAIR_LR": 0.0005, "KL_LR": 0.0004}


def test_our_weights_in_the_official_cnn_give_identical_outputs(official_checkout, tmp_path):
    from camu import build_model

    sources = patched_sources(official_checkout, official_settings(official_checkout, SCENARIOS["class"]))
    code = write_official(sources, tmp_path / "run", tmp_path)
    torch.manual_seed(3)
    ours = build_model("mnist_cnn", {}, 1, 10, (28, 28)).eval()
    with official_modules(code) as model_module:
        theirs = model_module.CNN()
        theirs.load_state_dict(to_official_state(ours.state_dict(), theirs), strict=True)
        theirs.eval()
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        (logits_a, emb_a), (logits_b, emb_b) = ours(x), theirs(x)
    torch.testing.assert_close(logits_a, logits_b, rtol=0, atol=1e-6)
    torch.testing.assert_close(emb_a, emb_b, rtol=0, atol=1e-6)
    wrong = {**ours.state_dict(), "embed.weight": torch.zeros(128, 1568)}
    with official_modules(code) as model_module, pytest.raises(RuntimeError, match="fc1.weight"):
        to_official_state(wrong, model_module.CNN())
