"""Dense weights -> masks: ``nm_mask`` (the ground truth), per-method masks, layer rules and the
``mask_every`` refresh rule."""

from nmsparse.prune.mask import check_groupable, group_keep, nm_mask
from nmsparse.prune.methods import IN_AXIS, OUT_AXIS, bp_mask, ff_mask, sr_ste_decay
from nmsparse.prune.rules import KernelReport, LayerRules, path_str, sparsity_report
from nmsparse.prune.schedule import MASK_COLLECTION, check_mask_every, refresh_mask_source

__all__ = [
    "IN_AXIS", "MASK_COLLECTION", "OUT_AXIS", "KernelReport", "LayerRules", "bp_mask",
    "check_groupable", "check_mask_every", "ff_mask", "group_keep", "nm_mask", "path_str",
    "refresh_mask_source", "sparsity_report", "sr_ste_decay",
]
