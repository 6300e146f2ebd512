import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from camu.scenarios import (
    ScenarioError,
    forget_indices,
    forgotten_classes,
    load_split,
    make_split,
    retain_indices,
    save_split,
)

LABELS = torch.arange(100) % 5  # 5 classes x 20 samples
NAMES = ["a", "b", "c", "d", "e"]


def test_random_fraction_is_deterministic_and_sized():
    s1 = make_split("random", {"fraction": 0.1}, LABELS, NAMES, seed=7)
    s2 = make_split("random", {"fraction": 0.1}, LABELS, NAMES, seed=7)
    s3 = make_split("random", {"fraction": 0.1}, LABELS, NAMES, seed=8)
    assert s1.equals(s2)
    assert not s1.equals(s3)
    assert len(forget_indices(s1)) == 10
    assert len(forget_indices(s1)) + len(retain_indices(s1)) == 100
    assert s1.column_names == ["index", "label", "role"]
    assert forgotten_classes(s1) == []


def test_class_removal_by_id_and_name():
    by_id = make_split("classes", {"classes": [1, 3]}, LABELS, NAMES, seed=0)
    by_name = make_split("classes", {"classes": ["b", "d"]}, LABELS, NAMES, seed=0)
    assert by_id.equals(by_name)
    f = forget_indices(by_id)
    assert set(LABELS[f].tolist()) == {1, 3} and len(f) == 40
    assert forgotten_classes(by_id) == [1, 3]


def test_proportions_per_class():
    s = make_split("proportions", {"proportions": {0: 0.5, "c": 1.0}}, LABELS, NAMES, seed=1)
    f = LABELS[forget_indices(s)]
    assert (f == 0).sum() == 10 and (f == 2).sum() == 20 and len(f) == 30
    assert forgotten_classes(s) == [2]


def test_indices_from_text_and_parquet(tmp_path):
    txt = tmp_path / "ids.txt"
    txt.write_text("# deletion requests\n3\n17\n\n42\n")
    pqf = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"sample_id": [3, 17, 42]}), pqf)
    a = make_split("indices", {"path": str(txt)}, LABELS, NAMES, seed=0)
    b = make_split("indices", {"path": str(pqf), "column": "sample_id"}, LABELS, NAMES, seed=0)
    assert forget_indices(a).tolist() == [3, 17, 42]
    assert a.equals(b)


def test_split_round_trips_through_parquet(tmp_path):
    s = make_split("random", {"fraction": 0.3}, LABELS, NAMES, seed=2)
    path = save_split(s, tmp_path / "split.parquet")
    assert load_split(path).equals(s)


@pytest.mark.parametrize("kind,opts,match", [
    ("random", {"fraction": 0.0}, "fraction"),
    ("random", {"fraction": 1.0}, "fraction"),
    ("random", {"fraction": 0.001}, "forgets nothing"),
    ("classes", {"classes": [9]}, "class 9 is not in the dataset"),
    ("classes", {"classes": ["zebra"]}, "'zebra' is not in the dataset"),
    ("classes", {"classes": [0, 1, 2, 3, 4]}, "nothing to retain"),
    ("proportions", {"proportions": {0: 1.5}}, r"proportions.0: Input should be less than or equal to 1"),
    ("proportions", {"proportions": {3: 0.5, "3": 0.2}}, r"listed more than once"),
    ("classes", {"classes": [True]}, "booleans are not accepted"),
    ("classes", {"classes": [2, "c"]}, r"\['c'\] are listed more than once"),
])
def test_impossible_requests_raise_clear_errors(kind, opts, match):
    with pytest.raises(ScenarioError, match=match):
        make_split(kind, opts, LABELS, NAMES, seed=0)


def test_index_file_errors(tmp_path):
    empty, out_of_range, garbage = tmp_path / "e.txt", tmp_path / "o.txt", tmp_path / "g.txt"
    empty.write_text("# nothing\n")
    out_of_range.write_text("5\n100\n")
    garbage.write_text("1\nabc\n")
    with pytest.raises(ScenarioError, match="empty"):
        make_split("indices", {"path": str(empty)}, LABELS, NAMES, 0)
    with pytest.raises(ScenarioError, match=r"\[100\] are out of range"):
        make_split("indices", {"path": str(out_of_range)}, LABELS, NAMES, 0)
    with pytest.raises(ScenarioError, match="line 2"):
        make_split("indices", {"path": str(garbage)}, LABELS, NAMES, 0)
    with pytest.raises(ScenarioError, match="does not exist"):
        make_split("indices", {"path": str(tmp_path / "missing.txt")}, LABELS, NAMES, 0)
