"""Optimizers and schedules: SGD (nesterov) + weight decay with one-cycle/cosine for CNNs, AdamW with
warmup-cosine for ViTs."""

from nmsparse.optim.factory import create_optimizer, create_schedule, decay_mask

__all__ = ["create_optimizer", "create_schedule", "decay_mask"]
