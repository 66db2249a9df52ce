"""Dense weights -> masks: ``nm_mask`` (the ground truth), per-method masks, and layer rules."""

from nmsparse.prune.mask import check_groupable, group_keep, nm_mask
from nmsparse.prune.methods import IN_AXIS, OUT_AXIS, bp_mask, ff_mask, sr_ste_decay
from nmsparse.prune.rules import KernelReport, LayerRules, path_str, sparsity_report

__all__ = [
    "IN_AXIS", "OUT_AXIS", "KernelReport", "LayerRules", "bp_mask", "check_groupable", "ff_mask",
    "group_keep", "nm_mask", "path_str", "sparsity_report", "sr_ste_decay",
]
