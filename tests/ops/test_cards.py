"""``cards.overridden``: a card's rule with fields replaced inside a block, restored after it."""

import pytest

from nmsparse.ops import cards


def test_overridden_replaces_fields_inside_the_block_only():
  before = cards.card_rule()
  with cards.overridden(fused_mask_source=True, packed_max_batch=3) as rule:
    assert rule == cards.card_rule()
    assert rule.fused_mask_source and rule.packed_max_batch == 3
    assert rule.source == before.source  # the fields not named stay the card's
    with cards.overridden(packed_max_batch=5):
      assert cards.card_rule().packed_max_batch == 5 and cards.card_rule().fused_mask_source
    assert cards.card_rule().packed_max_batch == 3
  assert cards.card_rule() == before


def test_overridden_restores_the_rule_when_the_block_raises():
  before = cards.card_rule()
  with pytest.raises(RuntimeError):
    with cards.overridden(fused_mask_source=not before.fused_mask_source):
      raise RuntimeError("inside")
  assert cards.card_rule() == before


def test_overridden_rejects_a_field_the_rule_does_not_have():
  with pytest.raises(ValueError, match="no field"):
    with cards.overridden(fused_mask_sources=True):
      pass
  assert not cards._OVERRIDE
