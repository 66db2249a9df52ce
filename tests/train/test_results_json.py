"""The results JSON's layout: ``format_json`` keeps the data and puts scalar-only records on one
line; ``split_mask_flips`` moves per-layer flips into columns that ``epoch_mask_flips`` reads back
(the old per-epoch layout too); the committed run files use the columns."""

import glob
import json
import math
import os

from nmsparse.train.metrics import epoch_mask_flips, format_json, split_mask_flips, write_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def history(epochs, layers=("a/kernel", "b/kernel")):
  return [{"epoch": e, "train_loss": 1.0 / e, "mask_flips": {p: 10 * e + i for i, p in enumerate(layers)},
           "mask_flip_fraction": 0.5 / e} for e in epochs]


def test_format_json_round_trips_nested_data():
  obj = {"model": "vit", "pattern": None, "nan": float("nan"), "empty": [], "none": {},
         "nested": {"a": [1, 2, {"b": [3.5, "x", True]}], "c": {"d": {"e": 1}}},
         "history": [{"epoch": 1, "loss": 0.25}, {"epoch": 2, "loss": 0.125}], 7: "int key"}
  back, want = json.loads(format_json(obj)), json.loads(json.dumps(obj))
  assert math.isnan(back.pop("nan")) and math.isnan(want.pop("nan"))
  assert back == want and want["7"] == "int key"


def test_format_json_puts_scalar_only_records_on_one_line():
  obj = {"history": [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}],
         "mask_flips": {"epochs": [1, 2], "layers": {"conv1/kernel": [4, 0]}}}
  lines = format_json(obj).splitlines()
  assert '  {"epoch": 1, "loss": 0.5},' in lines and '  {"epoch": 2, "loss": 0.25}' in lines
  assert '  "epochs": [1, 2],' in lines and '   "conv1/kernel": [4, 0]' in lines
  assert len(lines) == 12  # {, "history": [, 2 records, ], "mask_flips": {, epochs, layers {, 1, }, }, }


def test_write_json_is_atomic_and_parses(tmp_path):
  path = tmp_path / "sub" / "r.json"
  write_json(str(path), {"a": [1, 2], "b": {"c": [{"d": 1}]}})
  assert json.loads(path.read_text()) == {"a": [1, 2], "b": {"c": [{"d": 1}]}}
  assert os.listdir(path.parent) == ["r.json"]


def test_split_mask_flips_columns_and_reads_back():
  hist = history([1, 2, 3])
  kept, columns = split_mask_flips(hist)
  assert [set(h) for h in kept] == [{"epoch", "train_loss", "mask_flip_fraction"}] * 3
  assert columns == {"epochs": [1, 2, 3],
                     "layers": {"a/kernel": [10, 20, 30], "b/kernel": [11, 21, 31]}}
  expected = {h["epoch"]: h["mask_flips"] for h in hist}
  assert epoch_mask_flips({"history": kept, "mask_flips": columns}) == expected
  assert epoch_mask_flips({"history": hist}) == expected  # run files written before the columns


def test_split_mask_flips_without_flips_and_with_disagreeing_layers():
  plain = [{"epoch": 1, "train_loss": 0.5}]
  assert split_mask_flips(plain) == (plain, None)
  assert epoch_mask_flips({"history": plain}) == {}
  mixed = history([1], layers=("a/kernel",)) + history([2])  # a layer counted from epoch 2 on
  kept, columns = split_mask_flips(mixed)
  assert columns["layers"] == {"a/kernel": [10, 20], "b/kernel": [None, 21]}
  assert epoch_mask_flips({"history": kept, "mask_flips": columns}) == {
      h["epoch"]: h["mask_flips"] for h in mixed}


def test_committed_runs_keep_flips_in_columns():
  paths = glob.glob(os.path.join(ROOT, "results", "**", "*.json"), recursive=True)
  runs = []
  for path in paths:
    with open(path) as f:
      doc = json.load(f)
    if isinstance(doc, dict) and "history" in doc:
      runs.append((path, doc))
  assert len(runs) >= 40, "the committed run files were not found"
  per_epoch = [os.path.relpath(p, ROOT) for p, doc in runs
               if any("mask_flips" in h for h in doc["history"])]
  assert not per_epoch, f"run files with per-epoch mask_flips (scripts/compact_runs.py): {per_epoch}"
  for path, doc in runs:
    if "mask_flips" in doc:
      columns = doc["mask_flips"]
      tracked = [h["epoch"] for h in doc["history"] if "mask_flip_fraction" in h]
      assert columns["epochs"] == tracked, path
      assert all(len(c) == len(tracked) for c in columns["layers"].values()), path
