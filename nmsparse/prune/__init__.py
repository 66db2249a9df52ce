"""Dense weights -> masks: ``nm_mask`` (the ground truth), per-method masks, layer rules, the
``mask_every`` refresh rule and Bi-Mask's permutation search."""

from nmsparse.prune.mask import check_groupable, group_keep, nm_mask
from nmsparse.prune.methods import (IN_AXIS, OUT_AXIS, bimask_backward, bp_mask, ff_mask,
                                    flat_taps, sr_ste_decay)
from nmsparse.prune.permutation import best_permutation, kept_count, refresh_permutation
from nmsparse.prune.rules import KernelReport, LayerRules, path_str, sparsity_report
from nmsparse.prune.schedule import MASK_COLLECTION, check_mask_every, refresh_mask_source

__all__ = [
    "IN_AXIS", "MASK_COLLECTION", "OUT_AXIS", "KernelReport", "LayerRules", "best_permutation",
    "bimask_backward", "bp_mask", "check_groupable", "flat_taps", "kept_count",
    "refresh_permutation", "check_mask_every", "ff_mask", "group_keep", "nm_mask", "path_str",
    "refresh_mask_source", "sparsity_report", "sr_ste_decay",
]
