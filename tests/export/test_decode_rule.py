"""The per-card rule of the exported forward (``implementation=None``) against the measurements it
comes from: on the H200 table it never takes a native product measured slower than dense."""

import json
import os

from nmsparse.export import inference
from nmsparse.ops.cards import CARDS, DEFAULT, H200, prefers_native_decode

TABLE = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "h200_decode.json")
KEYS = ("op", "shape", "pattern", "batch", "implementation", "device", "dense_ms", "ms", "ratio")


def test_rule_picks_only_products_measured_faster_on_the_h200():
  with open(TABLE) as f:
    rows = [r for r in json.load(f) if r["op"] == "fwd_packed" and r["implementation"] == "native"]
  assert len(rows) == 108 and all(r["device"] == H200 and all(k in r for k in KEYS) for r in rows)
  rule = CARDS[H200]
  taken = 0
  for row in rows:
    native = prefers_native_decode(row["K"], row["O"], row["pattern"], row["batch"], rule)
    taken += native
    # where the rule runs dense the product is dense jnp.dot itself: ratio 1 by construction
    auto_ratio = row["ratio"] if native else 1.0
    assert auto_ratio >= 0.97, row
  assert taken > 0  # the rule takes the kernel somewhere (else this checks nothing)


def test_rule_needs_the_measured_shape_pattern_and_rows():
  rule = CARDS[H200]
  assert prefers_native_decode(4096, 11008, "2:8", 1, rule)
  assert prefers_native_decode(8192, 8192, "1:8", 4, rule)
  assert not prefers_native_decode(4096, 4096, "2:8", 8, rule)  # 0.81x measured
  assert not prefers_native_decode(4096, 4096, "2:4", 1, rule)  # 2:4 not taken
  assert not prefers_native_decode(768, 3072, "2:8", 1, rule)  # below the measured dims
  assert not prefers_native_decode(4096, 4096, "2:8", 0, rule)
  assert not prefers_native_decode(4096, 4096, "2:8", 1, DEFAULT)  # unmeasured cards: dense


def test_decode_path_is_dense_without_the_extension_or_in_float32():
  rule = CARDS[H200]
  assert inference.decode_path(4096, 4096, "2:8", 1, rule, dtype="float32") == "dense"
  from nmsparse import native
  expected = "native" if native.status() is None else "dense"
  assert inference.decode_path(4096, 4096, "2:8", 1, rule) == expected
