"""Vision Transformer for small images: conv patch embedding (``embedding``), learned position
embeddings, pre-LN encoder blocks (fused-qkv attention + GELU MLP), mean-pooled tokens, linear
``head``. Every projection is the injected ``dense`` class, so attention and MLP weights can be N:M
sparse while the embedding and head stay dense under the default rules.

Regularisers of the Compact Transformers recipes (ViT-Lite's defaults are 0.1 each), both off by
default and active only with ``train=True`` (they draw from the ``"dropout"`` PRNG stream):
``drop_path`` (stochastic depth: each residual branch of block ``i`` of ``depth`` is dropped per
example with probability ``drop_path * i / (depth - 1)``, kept branches scaled by the inverse keep
probability) and ``attention_dropout`` (dropout on the attention weights, ``einsum`` only).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from nmsparse.models.resnet import ModuleDef


ATTENTION = ("einsum", "xla", "cudnn", "auto")
CUDNN_SEQ_MULTIPLE = 2  # JAX's cuDNN attention rejects odd lengths in training with a mask/bias


def attend(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, how: str,
           dropout=None) -> jnp.ndarray:
  """Softmax attention of ``[B, T, H, D]`` q/k/v: ``einsum`` (scores materialised, fp32
  softmax), ``xla`` (``jax.nn.dot_product_attention``'s XLA path), ``cudnn`` (its fused cuDNN
  kernel; an odd T is padded by one and the padded key masked out by its length) or
  ``auto`` (``cudnn`` on a GPU backend, ``xla`` elsewhere). ``dropout``: a function applied to
  the attention weights (``einsum`` only: the fused paths have no dropout)."""
  if how == "auto":
    how = "cudnn" if jax.default_backend() == "gpu" else "xla"
  if dropout is not None and how != "einsum":
    raise ValueError(f"Attention dropout needs attention='einsum', not {how!r}.")
  if how == "einsum":
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    weights = nn.softmax(logits.astype(jnp.float32), axis=-1).astype(q.dtype)
    if dropout is not None:
      weights = dropout(weights)
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
  attention_dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if self.width % self.heads:
      raise ValueError(f"ViT width {self.width} is not divisible by heads={self.heads}.")
    b, t, _ = x.shape
    head_dim = self.width // self.heads
    qkv = self.dense(3 * self.width, name="qkv")(x).reshape(b, t, 3, self.heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    dropout = None
    if self.attention_dropout:
      dropout = functools.partial(nn.Dropout(self.attention_dropout), deterministic=not train)
    y = attend(q, k, v, self.attention, dropout).reshape(b, t, self.width)
    return self.dense(self.width, name="out")(y)


class DropPath(nn.Module):
  """Stochastic depth: the whole residual branch of an example is zeroed with probability
  ``rate`` and kept ones scaled by ``1 / (1 - rate)``; the identity unless ``train``."""

  rate: float

  @nn.compact
  def __call__(self, y: jnp.ndarray, train: bool) -> jnp.ndarray:
    if not train or self.rate == 0.0:
      return y
    keep = 1.0 - self.rate
    shape = (y.shape[0],) + (1,) * (y.ndim - 1)
    kept = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
    return jnp.where(kept, y / jnp.asarray(keep, y.dtype), jnp.zeros((), y.dtype))


class EncoderBlock(nn.Module):
  """Pre-LN transformer block: x + attn(LN(x)); x + MLP(LN(x))."""

  width: int
  heads: int
  mlp_dim: int
  dense: ModuleDef
  dtype: Any = jnp.float32
  attention: str = "einsum"
  drop_path: float = 0.0
  attention_dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    y = nn.LayerNorm(dtype=self.dtype, name="ln1")(x)
    y = Attention(self.width, self.heads, self.dense, self.dtype, self.attention,
                  self.attention_dropout, name="attn")(y, train)
    x = x + DropPath(self.drop_path)(y, train)
    y = nn.LayerNorm(dtype=self.dtype, name="ln2")(x)
    y = self.dense(self.width, name="mlp2")(nn.gelu(self.dense(self.mlp_dim, name="mlp1")(y)))
    return x + DropPath(self.drop_path)(y, train)


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
  drop_path: float = 0.0
  attention_dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = True) -> jnp.ndarray:
    for name, rate in (("drop_path", self.drop_path), ("attention_dropout",
                                                       self.attention_dropout)):
      if not 0.0 <= rate < 1.0:
        raise ValueError(f"ViT {name} must be in [0, 1), got {rate}.")
    x = jnp.asarray(x, self.dtype)
    p = self.patch
    x = self.conv(self.width, (p, p), (p, p), padding="VALID", name="embedding")(x)
    b, h, w, c = x.shape
    x = x.reshape(b, h * w, c)
    pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, h * w, c))
    x = x + jnp.asarray(pos, self.dtype)
    for i in range(self.depth):
      rate = self.drop_path * i / max(self.depth - 1, 1)  # linear in depth, 0 at the first block
      x = EncoderBlock(self.width, self.heads, self.mlp_ratio * self.width, self.dense,
                       self.dtype, self.attention, rate, self.attention_dropout,
                       name=f"block{i}")(x, train)
    x = nn.LayerNorm(dtype=self.dtype, name="ln_final")(x)
    x = self.dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")(
        jnp.mean(x, axis=1))
    return jnp.asarray(x, jnp.float32)
