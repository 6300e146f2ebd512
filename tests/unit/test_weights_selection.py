"""Safe weight loading, the sweep objective and the summary table."""

import math

import pytest
import torch

from camu.models import build_model
from camu.weights import UnsafeWeightsError, load_weights, save_weights
from orchestrator.driver.cache import model_key
from orchestrator.record import summary
from orchestrator.worker.objective import objective


def test_safetensors_round_trip(tmp_path):
    a = build_model("mnist_cnn", {}, 1, 10, (8, 8))
    b = build_model("mnist_cnn", {}, 1, 10, (8, 8))
    load_weights(b, save_weights(a, tmp_path / "w.safetensors"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_state_dict_pt_is_read_weights_only(tmp_path):
    torch.manual_seed(1)
    a = build_model("mnist_cnn", {}, 1, 10, (8, 8))
    torch.save(a.state_dict(), tmp_path / "w.pt")
    torch.manual_seed(2)
    b = load_weights(build_model("mnist_cnn", {}, 1, 10, (8, 8)), tmp_path / "w.pt")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


class Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_pickled_code_and_tampered_files_are_refused(tmp_path, capsys):
    torch.save({"weight": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeWeightsError, match="refused to load"):
        load_weights(build_model("mnist_cnn", {}, 1, 10, (8, 8)), tmp_path / "evil.pt")
    assert "pickled code ran" not in capsys.readouterr().out
    good = save_weights(build_model("mnist_cnn", {}, 1, 10, (8, 8)), tmp_path / "w.safetensors")
    raw = bytearray(good.read_bytes())
    raw[10:40] = b"\xff" * 30
    (tmp_path / "bad.safetensors").write_bytes(bytes(raw))
    with pytest.raises(UnsafeWeightsError):
        load_weights(build_model("mnist_cnn", {}, 1, 10, (8, 8)), tmp_path / "bad.safetensors")
    with pytest.raises(UnsafeWeightsError, match="do not fit"):
        load_weights(build_model("mnist_cnn", {}, 1, 4, (8, 8)), good)


def test_objective_floors_stop_collapsed_models_from_winning():
    oracle = {"ra": 99.0, "fa": 0.0, "ta": 90.0, "ta_retained": 98.0, "mia_official": 0.40}
    healthy = {"ra": 97.0, "fa": 5.0, "ta": 88.0, "ta_retained": 96.0, "mia_official": 0.42}
    collapsed = {"ra": 20.0, "fa": 0.0, "ta": 20.0, "ta_retained": 20.0, "mia_official": 0.40}
    gap, obj = objective(healthy, oracle, 10, 10, 100)
    assert gap == pytest.approx((2 + 5 + 2 + 2) / 4) and obj == gap
    cgap, cobj = objective(collapsed, oracle, 10, 10, 100)
    assert cobj == pytest.approx(cgap + 100) and cobj > obj


def test_chosen_configuration_and_table():
    rows = [summary.trial_row("s", "camu", seed, t, {"final": 1, "objective": obj, "avg_gap": obj}, f"r{t}{seed}", {})
            for t, seed, obj in [("preset", 0, 3.0), ("t1", 0, 1.0), ("preset", 1, 2.0), ("t1", 1, 5.0)]]
    rows.append(summary.trial_row("s", "camu", 0, "t9", {}, None, {}, failed=True))
    rows.append(summary.trial_row("s", "scrub", 0, "preset", {"final": 1, "objective": 7.0}, "x", {}))
    summary.mark_chosen(rows, "s", "camu", "t1")
    assert [(r["trial_id"], r["seed"]) for r in rows if r["is_best"]] == [("t1", 0), ("t1", 1)]  # one row per seed
    assert not any(r["is_best"] for r in rows if r["method"] == "scrub")  # another method's choice is its own
    table = summary.to_table(rows)
    assert table.column_names[:6] == ["scenario", "method", "trial_id", "seed", "is_best", "status"]
    assert table.column("status").to_pylist()[4] == "failed"
    assert math.isnan(table.column("ra").to_pylist()[4])
    assert "t1" in summary.render_text(table)


def test_by_method_is_mean_and_sample_std_over_seeds():
    import statistics

    ras = {0: 97.0, 1: 99.0, 2: 98.5}
    rows = [summary.trial_row("s", "camu", seed, "t3", {"final": 1, "ra": ra, "objective": 1.0}, "r", {})
            for seed, ra in ras.items()]
    rows += [summary.trial_row("s", "camu", seed, "preset", {"final": 1, "ra": 90.0 + seed, "objective": 2.0}, "p", {})
             for seed in ras]
    rows.append(summary.trial_row("s", "neggrad", 0, "preset", {"final": 1, "ra": 50.0, "objective": 9.0}, "n", {}))
    summary.mark_chosen(rows, "s", "camu", "t3")
    summary.mark_chosen(rows, "s", "neggrad", "preset")
    table = summary.by_method(summary.to_table(rows)).to_pylist()
    best = next(r for r in table if r["method"] == "camu" and r["config"] == "best")
    assert best["seeds"] == 3 and best["trials"] == 2 and best["trial_id"] == "t3"
    assert best["ra"] == pytest.approx(statistics.fmean(ras.values()))
    assert best["ra_std"] == pytest.approx(statistics.stdev(ras.values()))
    preset = next(r for r in table if r["method"] == "camu" and r["config"] == "preset")
    assert preset["ra"] == pytest.approx(91.0) and preset["ra_std"] == pytest.approx(1.0)
    single = next(r for r in table if r["method"] == "neggrad")
    assert single["seeds"] == 1 and math.isnan(single["ra_std"])  # one seed: no spread claimed
    text = summary.render_by_method(summary.by_method(summary.to_table(rows)))
    assert "98.17 +- 1.04" in text and "50.00 +-" not in text


def test_cache_key_depends_on_what_determines_the_weights():
    ds = {"name": "digits", "options": {"test_size": 0.25}}
    m = {"name": "mnist_cnn", "options": {}}
    r = {"epochs": 20, "seed": 0}
    k = model_key("oracle", ds, m, r, torch.arange(10))
    assert k == model_key("oracle", ds, m, r, torch.arange(10))
    assert k != model_key("oracle", ds, m, {**r, "seed": 1}, torch.arange(10))
    assert k != model_key("oracle", ds, m, r, torch.arange(11))
    assert k == model_key("oracle", {"name": "digits", "options": {"test_size": 0.25, "num_workers": 8}}, m, r,
                          torch.arange(10))
