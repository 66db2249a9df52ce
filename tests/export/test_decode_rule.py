"""The per-card rule of the exported forward (``implementation=None``) against the measurements it
comes from: on the H200 table it never takes a native product measured slower than dense."""

import json
import os

from nmsparse.export import inference
from nmsparse.ops.cards import CARDS, DEFAULT, H200, decode_choice, prefers_native_decode

TABLE = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "h200_decode.json")
KEYS = ("op", "shape", "pattern", "batch", "implementation", "device", "dense_ms", "ms", "ratio")


def _rows():
  with open(TABLE) as f:
    return [r for r in json.load(f) if r["op"] == "fwd_packed"]


def test_rule_picks_only_products_measured_faster_on_the_h200():
  rows = _rows()
  assert all(r["device"] == H200 and all(k in r for k in KEYS) for r in rows)
  ratio = {(r["K"], r["O"], r["pattern"], r["batch"], r["implementation"]): r["ratio"]
           for r in rows}
  products = {key[:4] for key in ratio}
  assert len(products) == 108 and sum(key[4] == "tiled" for key in ratio) == 72
  rule = CARDS[H200]
  taken = {"native": 0, "tiled": 0}
  for product in products:
    choice = decode_choice(*product, rule)
    if choice == "dense":  # the product is dense jnp.dot itself: ratio 1 by construction
      continue
    taken[choice] += 1
    assert ratio[product + (choice,)] >= 0.97, (product, choice)
  assert taken["native"] > 0 and taken["tiled"] > 0  # each kernel is taken somewhere


def test_rule_holds_on_a_second_h200_run():
  """The raw grid of a later call on another H200 (git 7fb2982, batch <= 16, the tensor-core
  kernel's decode table rebuilt): the rule derived from the first run still takes no product
  measured below 0.97x of dense there."""
  path = os.path.join(os.path.dirname(TABLE), "h200_decode", "grid_bulk_7fb2982.json")
  with open(path) as f:
    data = json.load(f)
  assert data["device"] == H200 and len(data["kernel"]) == 72
  rule = CARDS[H200]
  taken = 0
  for r in data["kernel"]:
    choice = decode_choice(r["K"], r["O"], r["pattern"], r["batch"], rule)
    if choice != "dense":
      taken += 1
      ratio = r["fma_ratio"] if choice == "native" else r["pipe_ratio"]
      assert ratio >= 0.97, (r["K"], r["O"], r["pattern"], r["batch"], choice, ratio)
  assert taken >= 10


def test_rule_holds_on_a_third_h200_run_with_the_blocked_layout():
  """The grid of git 710a55f (K, O >= 4096, batch 1-16) timed ``blocked_matmul``, which the native
  path serves since: no product the rule takes ran below 0.97x of dense there."""
  path = os.path.join(os.path.dirname(TABLE), "h200_decode", "grid_blocked_710a55f.json")
  with open(path) as f:
    data = json.load(f)
  assert data["device"] == H200 and len(data["kernel"]) == 48
  assert all(r["blocked_rel_err"] < 1e-3 for r in data["kernel"])
  rule = CARDS[H200]
  taken = {"native": 0, "tiled": 0}
  for r in data["kernel"]:
    choice = decode_choice(r["K"], r["O"], r["pattern"], r["batch"], rule)
    if choice != "dense":
      taken[choice] += 1
      ratio = r["blocked_ratio"] if choice == "native" else r["pipe_ratio"]
      assert ratio >= 0.97, (r["K"], r["O"], r["pattern"], r["batch"], choice, ratio)
  assert taken["native"] >= 8 and taken["tiled"] >= 6


def test_rule_needs_the_measured_shape_pattern_and_rows():
  rule = CARDS[H200]
  assert decode_choice(4096, 11008, "2:8", 1, rule) == "native"  # 1.93x measured
  assert decode_choice(8192, 8192, "1:8", 4, rule) == "native"
  assert decode_choice(8192, 8192, "2:8", 8, rule) == "tiled"  # 1.34x
  assert decode_choice(11008, 4096, "2:4", 4, rule) == "tiled"
  assert decode_choice(11008, 4096, "2:4", 8, rule) == "dense"  # 0.76x in the third run
  assert decode_choice(4096, 11008, "2:8", 8, rule) == "dense"  # K < 8192: the pipe lost, 0.85x
  assert decode_choice(4096, 4096, "2:8", 1, rule) == "dense"  # 4096^2: 0.84x
  assert decode_choice(8192, 8192, "2:8", 16, rule) == "dense"  # 16 rows not taken
  assert decode_choice(768, 3072, "2:8", 1, rule) == "dense"  # below the measured sizes
  assert decode_choice(8192, 8192, "2:8", 0, rule) == "dense"
  assert not prefers_native_decode(8192, 8192, "2:8", 1, DEFAULT)  # unmeasured cards: dense
  assert prefers_native_decode(8192, 8192, "2:8", 4, rule)


def test_decode_path_is_dense_without_the_extension_or_in_float32():
  rule = CARDS[H200]
  assert inference.decode_path(8192, 8192, "2:8", 1, rule, dtype="float32") == "dense"
  from nmsparse import native
  loaded = native.status() is None
  assert inference.decode_path(8192, 8192, "2:8", 1, rule) == ("native" if loaded else "dense")
  assert inference.decode_path(8192, 8192, "2:8", 8, rule) == ("tiled" if loaded else "dense")
