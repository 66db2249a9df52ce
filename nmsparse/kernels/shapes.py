"""The one named shape list: ``ci`` shapes for the kernel tests, ``bench`` shapes for the benchmark.

A shape is a weight ``[K, O]`` in GEMM form: dense layers as they are, convs as ``[kh*kw*C, O]``
(the implicit-GEMM view the prune kernel works on). Bench shapes come from the models in
``nmsparse.models``: ViT-S/16 (d=384) and ViT-B/16 (d=768) attention and MLP projections, ResNet-50
bottleneck convs, and the square 4096 / 8192 layers of the issue.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Shape:
  name: str
  k: int  # reduction (input channels, or kh*kw*C)
  o: int  # output channels
  hwio: tuple[int, int, int, int] | None = None  # the conv kernel this GEMM view comes from

  @property
  def weight_shape(self) -> tuple[int, ...]:
    return self.hwio if self.hwio else (self.k, self.o)


def _conv(name: str, kh: int, c: int, o: int) -> Shape:
  return Shape(name, kh * kh * c, o, (kh, kh, c, o))


BENCH: tuple[Shape, ...] = (
    Shape("vit_s.qkv", 384, 1152),
    Shape("vit_s.mlp_fc1", 384, 1536),
    Shape("vit_s.mlp_fc2", 1536, 384),
    Shape("vit_b.attn_out", 768, 768),
    Shape("vit_b.mlp_fc1", 768, 3072),
    Shape("vit_b.mlp_fc2", 3072, 768),
    _conv("resnet50.layer3.conv2_3x3", 3, 256, 256),
    _conv("resnet50.layer4.conv2_3x3", 3, 512, 512),
    _conv("resnet50.layer4.conv3_1x1", 1, 512, 2048),
    Shape("square_4096", 4096, 4096),
    Shape("square_8192", 8192, 8192),
)

# Small and deliberately odd (not multiples of the tiles) for the CPU interpreter; divisible by 8
# so that every test pattern applies. The HWIO one exercises the conv view.
CI: tuple[Shape, ...] = (
    Shape("odd_40x24", 40, 24),
    Shape("odd_24x56", 24, 56),
    _conv("conv_3x3_8x16", 3, 8, 16),
)


def by_name(name: str) -> Shape:
  """The shape called ``name`` in either list."""
  for s in CI + BENCH:
    if s.name == name:
      return s
  raise KeyError(f"No shape named {name!r}; known: {[s.name for s in CI + BENCH]}.")
