"""Rewrites run result files written before ``split_mask_flips`` into its columnar layout, in place:
the per-layer ``mask_flips`` of every epoch record become one ``mask_flips`` record of series, and the
file is laid out by ``format_json``. Nothing else changes: every other value is compared after the
rewrite, and the flips are read back per epoch and compared, before a file is replaced.

  python scripts/compact_runs.py results/runs/*.json results/superseded/*/*.json
"""

from __future__ import annotations

import json
import os
import sys

from nmsparse.train.metrics import epoch_mask_flips, split_mask_flips, write_json


def compact(path: str) -> tuple[int, int] | None:
  """Rewrites ``path`` if it holds per-epoch flips; returns (bytes before, after), else None."""
  with open(path) as f:
    old = json.load(f)
  if not isinstance(old, dict) or not any("mask_flips" in h for h in old.get("history", ())):
    return None
  if "mask_flips" in old:
    raise ValueError(f"{path}: has both per-epoch and columnar mask_flips")
  history, columns = split_mask_flips(old["history"])
  new = {**old, "history": history, "mask_flips": columns}
  if epoch_mask_flips(new) != epoch_mask_flips(old):
    raise AssertionError(f"{path}: the columns do not read back to the per-epoch flips")
  strip = lambda d: {**d, "history": [{k: v for k, v in h.items() if k != "mask_flips"}
                                      for h in d["history"]]}
  if {k: v for k, v in strip(new).items() if k != "mask_flips"} != strip(old):
    raise AssertionError(f"{path}: a value other than the flips changed")
  before = os.path.getsize(path)
  write_json(path, new)
  with open(path) as f:
    if json.load(f) != new:
      raise AssertionError(f"{path}: the rewritten file does not parse back to the same run")
  return before, os.path.getsize(path)


def main(paths: list[str]) -> None:
  total = [0, 0]
  for path in paths:
    sizes = compact(path)
    if sizes is not None:
      total = [total[0] + sizes[0], total[1] + sizes[1]]
      print(f"{path}: {sizes[0]} -> {sizes[1]} bytes")
  print(f"{total[0]} -> {total[1]} bytes in all")


if __name__ == "__main__":
  main(sys.argv[1:])
