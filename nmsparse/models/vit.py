"""Vision Transformer for small images: conv patch embedding (``embedding``), learned position
embeddings, pre-LN encoder blocks (fused-qkv attention + GELU MLP), mean-pooled tokens, linear
``head``. Every projection is the injected ``dense`` class, so attention and MLP weights can be N:M
sparse while the embedding and head stay dense under the default rules.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nmsparse.models.resnet import ModuleDef


ATTENTION = ("einsum", "xla", "cudnn", "auto")
CUDNN_SEQ_MULTIPLE = 2  # JAX's cuDNN attention rejects odd lengths in training with a mask/bias


def attend(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, how: str) -> jnp.ndarray:
  """Softmax attention of ``[B, T, H, D]`` q/k/v: ``einsum`` (scores materialised, fp32
  softmax), ``xla`` (``jax.nn.dot_product_attention``'s XLA path), ``cudnn`` (its fused cuDNN
  kernel; an odd T is padded by one and the padded key masked out by its length) or
  ``auto`` (``cudnn`` on a GPU backend, ``xla`` elsewhere)."""
  if how == "auto":
    how = "cudnn" if jax.default_backend() == "gpu" else "xla"
  if how == "einsum":
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    weights = nn.softmax(logits.astype(jnp.float32), axis=-1).astype(q.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)
  if how == "xla":
    return jax.nn.dot_product_attention(q, k, v, implementation="xla")
  if how == "cudnn":
    b, t = q.shape[:2]
    pad = (-t) % CUDNN_SEQ_MULTIPLE
    if not pad:
      return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
    padded = [jnp.pad(a, ((0, 0), (0, pad), (0, 0), (0, 0))) for a in (q, k, v)]
    lengths = jnp.full((b,), t, jnp.int32)
    y = jax.nn.dot_product_attention(*padded, query_seq_lengths=lengths,
                                     key_value_seq_lengths=lengths, implementation="cudnn")
    return y[:, :t]
  raise ValueError(f"Unknown attention {how!r}; expected one of {ATTENTION}.")


class Attention(nn.Module):
  """Multi-head self-attention with one fused ``qkv`` projection and an ``out`` projection."""

  width: int
  heads: int
  dense: ModuleDef
  dtype: Any = jnp.float32
  attention: str = "einsum"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    if self.width % self.heads:
      raise ValueError(f"ViT width {self.width} is not divisible by heads={self.heads}.")
    b, t, _ = x.shape
    head_dim = self.width // self.heads
    qkv = self.dense(3 * self.width, name="qkv")(x).reshape(b, t, 3, self.heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    y = attend(q, k, v, self.attention).reshape(b, t, self.width)
    return self.dense(self.width, name="out")(y)


class EncoderBlock(nn.Module):
  """Pre-LN transformer block: x + attn(LN(x)); x + MLP(LN(x))."""

  width: int
  heads: int
  mlp_dim: int
  dense: ModuleDef
  dtype: Any = jnp.float32
  attention: str = "einsum"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    y = nn.LayerNorm(dtype=self.dtype, name="ln1")(x)
    x = x + Attention(self.width, self.heads, self.dense, self.dtype, self.attention,
                      name="attn")(y)
    y = nn.LayerNorm(dtype=self.dtype, name="ln2")(x)
    y = nn.gelu(self.dense(self.mlp_dim, name="mlp1")(y))
    return x + self.dense(self.width, name="mlp2")(y)


class ViT(nn.Module):
  """ViT with ``patch`` x ``patch`` patches, ``depth`` blocks of ``width`` and ``heads`` heads."""

  num_classes: int
  patch: int = 4
  width: int = 384
  depth: int = 6
  heads: int = 6
  mlp_ratio: int = 4
  dense: ModuleDef = nn.Dense
  conv: ModuleDef = nn.Conv
  dtype: Any = jnp.float32
  attention: str = "einsum"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    del train  # no dropout or batch statistics
    x = jnp.asarray(x, self.dtype)
    p = self.patch
    x = self.conv(self.width, (p, p), (p, p), padding="VALID", name="embedding")(x)
    b, h, w, c = x.shape
    x = x.reshape(b, h * w, c)
    pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, h * w, c))
    x = x + jnp.asarray(pos, self.dtype)
    for i in range(self.depth):
      x = EncoderBlock(self.width, self.heads, self.mlp_ratio * self.width, self.dense,
                       self.dtype, self.attention, name=f"block{i}")(x)
    x = nn.LayerNorm(dtype=self.dtype, name="ln_final")(x)
    x = self.dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")(
        jnp.mean(x, axis=1))
    return jnp.asarray(x, jnp.float32)
