// nmsparse native backend: the value-serial product y = x @ unpack(W_ff) on packed N:M operands,
// for small batches (1..64 rows), where the product is memory-bound and its time is the weight bytes.
//
// Operand layout (nmsparse.pack, FF operand of a dense [K, O] kernel grouped along K, G = K / M):
//   values    [N, Gp, O] bf16   values[j, g, o] = the j-th kept entry of group g of column o
//   positions [N, Gq, O] uint8  byte (j, i, o) holds the in-group positions of groups i*q .. i*q+q-1
//                               (q = 8 / BITS fields, BITS = 2 for M <= 4, 4 for M <= 16)
// Activations x [B, K] bf16, output y [B, O] bf16, fp32 accumulation.
//
// Schedule: a block owns 64 output columns (a warp's 32 lanes x 2 adjacent columns, so every value
// load is one coalesced 128-byte row) and one slice of the reduction; its warps take the slice's
// position-byte rows in turn. The slice of x the block needs is staged once in shared memory as
// [k][BT] (BT batch rows contiguous), so the decode of one kept value is a shift and a mask, and its
// BT multiplicands are one vector gather. Decoded weights never leave registers: each kept value is
// multiplied where it was loaded. The loads of UNROLL byte rows are issued before any is used, so
// enough bytes are in flight to cover HBM latency. Warps reduce through shared memory; slices write
// fp32 partials [S, B, O] that a second kernel sums into y (one slice: y is written directly).
//
// Handler nms_vs_matmul: x, values, positions -> y, partials (workspace; S*B*O fp32, or 1 byte).
// Attributes n, m (the pattern), splits (S, chosen by the Python wrapper).

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kWarps = 4;     // warps per block (each takes every kWarps-th byte row)
constexpr int kCols = 64;     // output columns per block
constexpr int kUnroll = 4;    // byte rows whose loads are in flight together, per warp

template <int BT>
struct XVec;  // BT bf16 activations of one reduction index, loaded as one vector

template <>
struct XVec<1> {
  __device__ static void load(const __nv_bfloat16* p, float* out) { out[0] = __bfloat162float(*p); }
};
template <>
struct XVec<2> {
  __device__ static void load(const __nv_bfloat16* p, float* out) {
    float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
    out[0] = f.x;
    out[1] = f.y;
  }
};
template <>
struct XVec<4> {
  __device__ static void load(const __nv_bfloat16* p, float* out) {
    uint2 u = *reinterpret_cast<const uint2*>(p);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float2 f = __bfloat1622float2(h[i]);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  }
};
template <>
struct XVec<8> {
  __device__ static void load(const __nv_bfloat16* p, float* out) {
    uint4 u = *reinterpret_cast<const uint4*>(p);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float2 f = __bfloat1622float2(h[i]);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  }
};
template <>
struct XVec<16> {
  __device__ static void load(const __nv_bfloat16* p, float* out) {
    XVec<8>::load(p, out);
    XVec<8>::load(p + 8, out + 8);
  }
};

// One block: columns [c_blk, c_blk + 64), byte rows [r0, r1) of the positions, batch rows
// [b0, b0 + BT). Shared memory: x slice [(r1 - r0) * q * M][BT] bf16, then the warp partials.
template <int BT, int N, int BITS>
__global__ void __launch_bounds__(kWarps * 32)
vs_fwd_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ values,
              const uint8_t* __restrict__ positions, float* __restrict__ partial,
              __nv_bfloat16* __restrict__ y, int B, int K, int O, int M, int Gp, int Gq,
              int rows_per_split) {
  constexpr int Q = 8 / BITS;
  constexpr uint32_t kMask = (1u << BITS) - 1;
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* xs = reinterpret_cast<__nv_bfloat16*>(smem);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int c = blockIdx.x * kCols + 2 * lane;  // this lane's first column
  const int split = blockIdx.y;
  const int b0 = blockIdx.z * BT;
  const int r0 = split * rows_per_split;
  const int r1 = min(Gq, r0 + rows_per_split);
  const int k0 = r0 * Q * M;
  const int kspan = max(0, r1 - r0) * Q * M;  // may run past K in the padding groups: zeros there

  // Stage x[b0 : b0 + BT, k0 : k0 + kspan] as xs[k][b] (rows past B, columns past K: zeros), in
  // chunks of 8 k (16 bytes), kStage chunks per thread in flight. Consecutive threads take
  // consecutive batch rows of one chunk, so their 2-byte stores land in consecutive banks.
  {
    constexpr int kStage = 8;
    const int chunks = (kspan + 7) / 8;
    const int total = BT * chunks;
    const bool vec = ((K | k0) & 7) == 0;
    for (int base = threadIdx.x; base < total; base += blockDim.x * kStage) {
      uint4 buf[kStage];
#pragma unroll
      for (int u = 0; u < kStage; ++u) {
        const int i = base + u * blockDim.x;
        const int b = i % BT, ch = i / BT;
        const int gb = b0 + b, gk = k0 + ch * 8;
        buf[u] = make_uint4(0, 0, 0, 0);
        if (i < total && gb < B) {
          const __nv_bfloat16* src = x + static_cast<int64_t>(gb) * K + gk;
          if (vec && gk + 8 <= K) {
            buf[u] = __ldg(reinterpret_cast<const uint4*>(src));
          } else {
            __nv_bfloat16* e = reinterpret_cast<__nv_bfloat16*>(&buf[u]);
            for (int t = 0; t < 8 && gk + t < K; ++t) e[t] = src[t];
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kStage; ++u) {
        const int i = base + u * blockDim.x;
        if (i >= total) break;
        const int b = i % BT, ch = i / BT;
        const __nv_bfloat16* e = reinterpret_cast<const __nv_bfloat16*>(&buf[u]);
        if (BT == 1 && ch * 8 + 8 <= kspan) {
          *reinterpret_cast<uint4*>(xs + ch * 8) = buf[u];
        } else {
#pragma unroll
          for (int t = 0; t < 8; ++t)
            if (ch * 8 + t < kspan) xs[(ch * 8 + t) * BT + b] = e[t];
        }
      }
    }
  }
  __syncthreads();

  float acc0[BT], acc1[BT];
#pragma unroll
  for (int b = 0; b < BT; ++b) acc0[b] = acc1[b] = 0.f;

  const bool pair = c + 1 < O;
  const bool vec = pair && (O % 2 == 0);  // 4-byte aligned value pairs
  if (c < O) {
    for (int rb = r0 + warp; rb < r1; rb += kWarps * kUnroll) {
      uint32_t vbits[kUnroll][N][Q];  // two bf16 values (columns c, c + 1) per entry
      uint32_t pbits[kUnroll][N];     // position bytes of columns c (low) and c + 1 (high)
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int r = rb + u * kWarps;
        const bool live = r < r1;
#pragma unroll
        for (int j = 0; j < N; ++j) {
          const int64_t prow = (static_cast<int64_t>(j) * Gq + r) * O + c;
          uint32_t p = 0;
          if (live) {
            if (vec) {
              p = __ldg(reinterpret_cast<const unsigned short*>(positions + prow));
            } else {
              p = positions[prow];
              if (pair) p |= static_cast<uint32_t>(positions[prow + 1]) << 8;
            }
          }
          pbits[u][j] = p;
#pragma unroll
          for (int t = 0; t < Q; ++t) {
            const int64_t vrow = (static_cast<int64_t>(j) * Gp + r * Q + t) * O + c;
            uint32_t v = 0;
            if (live) {
              if (vec) {
                v = __ldg(reinterpret_cast<const unsigned int*>(values + vrow));
              } else {
                v = __bfloat16_as_ushort(values[vrow]);
                if (pair) v |= static_cast<uint32_t>(__bfloat16_as_ushort(values[vrow + 1])) << 16;
              }
            }
            vbits[u][j][t] = v;
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int r = rb + u * kWarps;
        if (r >= r1) break;
#pragma unroll
        for (int j = 0; j < N; ++j) {
#pragma unroll
          for (int t = 0; t < Q; ++t) {
            const int kbase = ((r - r0) * Q + t) * M;
            const int p0 = (pbits[u][j] >> (t * BITS)) & kMask;
            const int p1 = (pbits[u][j] >> (8 + t * BITS)) & kMask;
            const float v0 = __uint_as_float(vbits[u][j][t] << 16);
            const float v1 = __uint_as_float(vbits[u][j][t] & 0xffff0000u);
            float xv[BT];
            XVec<BT>::load(xs + (kbase + p0) * BT, xv);
#pragma unroll
            for (int b = 0; b < BT; ++b) acc0[b] = fmaf(v0, xv[b], acc0[b]);
            XVec<BT>::load(xs + (kbase + p1) * BT, xv);
#pragma unroll
            for (int b = 0; b < BT; ++b) acc1[b] = fmaf(v1, xv[b], acc1[b]);
          }
        }
      }
    }
  }

  // Reduce the warps: warps 1.. write [warp - 1][b][column] partials, warp 0 adds them.
  float* red = reinterpret_cast<float*>(smem + ((static_cast<size_t>(kspan) * BT * 2 + 15) / 16) * 16);
  if (warp > 0) {
#pragma unroll
    for (int b = 0; b < BT; ++b) {
      red[((warp - 1) * BT + b) * kCols + 2 * lane] = acc0[b];
      red[((warp - 1) * BT + b) * kCols + 2 * lane + 1] = acc1[b];
    }
  }
  __syncthreads();
  if (warp > 0 || c >= O) return;
#pragma unroll
  for (int b = 0; b < BT; ++b) {
#pragma unroll
    for (int w = 0; w < kWarps - 1; ++w) {
      acc0[b] += red[(w * BT + b) * kCols + 2 * lane];
      acc1[b] += red[(w * BT + b) * kCols + 2 * lane + 1];
    }
  }
  const bool direct = gridDim.y == 1;
#pragma unroll
  for (int b = 0; b < BT; ++b) {
    const int gb = b0 + b;
    if (gb >= B) break;
    const int64_t o = static_cast<int64_t>(gb) * O + c;
    if (direct) {
      y[o] = __float2bfloat16(acc0[b]);
      if (pair) y[o + 1] = __float2bfloat16(acc1[b]);
    } else {
      float* p = partial + static_cast<int64_t>(split) * B * O + o;
      p[0] = acc0[b];
      if (pair) p[1] = acc1[b];
    }
  }
}

__global__ void vs_sum_splits_kernel(const float* __restrict__ partial, __nv_bfloat16* __restrict__ y,
                                     int64_t size, int splits) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < size;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (int k = 0; k < splits; ++k) s += partial[k * size + i];
    y[i] = __float2bfloat16(s);
  }
}

size_t SmemBytes(int bt, int kspan) {
  return ((static_cast<size_t>(kspan) * bt * 2 + 15) / 16) * 16 +
         static_cast<size_t>(kWarps - 1) * bt * kCols * sizeof(float);
}

template <int BT, int N, int BITS>
cudaError_t LaunchFwd(cudaStream_t stream, const __nv_bfloat16* x, const __nv_bfloat16* values,
                      const uint8_t* positions, float* partial, __nv_bfloat16* y, int B, int K,
                      int O, int M, int Gp, int Gq, int splits) {
  constexpr int Q = 8 / BITS;
  const int rows_per_split = (Gq + splits - 1) / splits;
  const size_t smem = SmemBytes(BT, rows_per_split * Q * M);
  auto kernel = vs_fwd_kernel<BT, N, BITS>;
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  dim3 grid((O + kCols - 1) / kCols, splits, (B + BT - 1) / BT);
  kernel<<<grid, kWarps * 32, smem, stream>>>(x, values, positions, partial, y, B, K, O, M, Gp, Gq,
                                              rows_per_split);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess || splits == 1) return e;
  const int64_t size = static_cast<int64_t>(B) * O;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((size + threads - 1) / threads, 4096));
  vs_sum_splits_kernel<<<blocks, threads, 0, stream>>>(partial, y, size, splits);
  return cudaGetLastError();
}

template <int N, int BITS>
cudaError_t DispatchBatch(cudaStream_t s, int bt, const __nv_bfloat16* x, const __nv_bfloat16* v,
                          const uint8_t* p, float* part, __nv_bfloat16* y, int B, int K, int O,
                          int M, int Gp, int Gq, int splits) {
  switch (bt) {
    case 1: return LaunchFwd<1, N, BITS>(s, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
    case 2: return LaunchFwd<2, N, BITS>(s, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
    case 4: return LaunchFwd<4, N, BITS>(s, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
    case 8: return LaunchFwd<8, N, BITS>(s, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
    default: return LaunchFwd<16, N, BITS>(s, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
  }
}

template <int BITS>
cudaError_t DispatchN(cudaStream_t s, int n, int bt, const __nv_bfloat16* x,
                      const __nv_bfloat16* v, const uint8_t* p, float* part, __nv_bfloat16* y,
                      int B, int K, int O, int M, int Gp, int Gq, int splits) {
  switch (n) {
    case 1: return DispatchBatch<1, BITS>(s, bt, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
    case 2: return DispatchBatch<2, BITS>(s, bt, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
    case 3: return DispatchBatch<3, BITS>(s, bt, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
    default: return DispatchBatch<4, BITS>(s, bt, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
  }
}

ffi::Error VsMatmulImpl(cudaStream_t stream, ffi::Buffer<ffi::BF16> x,
                        ffi::Buffer<ffi::BF16> values, ffi::Buffer<ffi::U8> positions,
                        ffi::Result<ffi::Buffer<ffi::BF16>> y, ffi::Result<ffi::AnyBuffer> partial,
                        int64_t n, int64_t m, int64_t splits) {
  auto xd = x.dimensions(), vd = values.dimensions(), pd = positions.dimensions();
  if (xd.size() != 2 || vd.size() != 3 || pd.size() != 3)
    return ffi::Error::InvalidArgument("nms_vs_matmul: x [B, K], values [N, Gp, O], positions "
                                       "[N, Gq, O] expected");
  const int64_t B = xd[0], K = xd[1], O = vd[2], Gp = vd[1], Gq = pd[1];
  const int bits = m <= 4 ? 2 : 4;
  const int q = 8 / bits;
  if (n < 1 || n > 4 || m < 3 || m > 16 || vd[0] != n || pd[0] != n || pd[2] != O ||
      Gp != q * Gq || K % m != 0 || K / m > Gp)
    return ffi::Error::InvalidArgument("nms_vs_matmul: operand shapes do not match the pattern");
  if (splits < 1 || (splits > 1 && partial->size_bytes() < static_cast<size_t>(splits * B * O * 4)))
    return ffi::Error::InvalidArgument("nms_vs_matmul: partials buffer too small");
  if (B == 0 || O == 0) return ffi::Error::Success();
  const int bt = B >= 16 ? 16 : B >= 8 ? 8 : B >= 4 ? 4 : B >= 2 ? 2 : 1;
  const auto* xp = reinterpret_cast<const __nv_bfloat16*>(x.typed_data());
  const auto* vp = reinterpret_cast<const __nv_bfloat16*>(values.typed_data());
  const uint8_t* pp = positions.typed_data();
  auto* yp = reinterpret_cast<__nv_bfloat16*>(y->typed_data());
  float* part = splits > 1 ? reinterpret_cast<float*>(partial->untyped_data()) : nullptr;
  cudaError_t e = bits == 2
      ? DispatchN<2>(stream, n, bt, xp, vp, pp, part, yp, B, K, O, m, Gp, Gq, splits)
      : DispatchN<4>(stream, n, bt, xp, vp, pp, part, yp, B, K, O, m, Gp, Gq, splits);
  if (e != cudaSuccess)
    return ffi::Error::Internal(std::string("nms_vs_matmul: ") + cudaGetErrorString(e));
  return ffi::Error::Success();
}


// ---------------------------------------------------------------------------------------------
// The tensor-core kernel: packed weights decoded straight into mma.sync fragments.
//
// Operand (nmsparse.kernels.value_serial.prepare, N <= 2, M in {4, 8}): per 16 x 16 tile of W^T
// (rows o, columns k) every lane holds one *slice*: the 4N kept values of the groups its A
// fragment touches (rows o0 + g, o0 + g + 8 with g = lane / 4; its two groups of the k-tile),
// field f = (2r + s) N + j, and their positions (2 or 4 bits each) packed into 32-bit words,
// kPack k-tiles per word. values [OT, KT, 8, H, 4N] bf16, positions [OT, KT / kPack, 8, H] u32.
// A lane builds its fragment register a[r + 2s] = {W[o][k], W[o][k + 1]} by comparing the
// slot positions with its two in-group offsets: no shared memory, no dense tile anywhere. x (the
// mma B operand, batch as its N dimension) is staged once per block in shared memory, row-major
// [rows][kspan + 8] (the pad spreads the rows over the banks). A block is 4 warps on 64 output
// columns (4 mma tiles); the warps take the block's reduction slice 4 k-tiles at a time.

constexpr int kTileK = 16, kTileO = 16, kStepTiles = 4, kBlockTiles = 4;

template <int N, int M>
struct Slice {
  static constexpr int H = M == 4 ? 2 : 1;
  static constexpr int F = 4 * N;
  static constexpr int kBits = M == 4 ? 2 : 4;
  static constexpr int kNeed = F * kBits;
  static constexpr int kSlot = kNeed <= 8 ? 8 : kNeed <= 16 ? 16 : 32;
  static constexpr int kPack = 32 / kSlot;
  static constexpr int kWords = F / 2;  // 32-bit words of values
};

__device__ __forceinline__ void Mma(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <int W>
struct Words;
template <>
struct Words<2> {
  __device__ static void load(const uint32_t* p, uint32_t* w) {
    uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
    w[0] = u.x, w[1] = u.y;
  }
};
template <>
struct Words<4> {
  __device__ static void load(const uint32_t* p, uint32_t* w) {
    uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
    w[0] = u.x, w[1] = u.y, w[2] = u.z, w[3] = u.w;
  }
};

template <int N, int M, int NT>
__global__ void __launch_bounds__(kWarps * 32)
vs_tiled_kernel(const __nv_bfloat16* __restrict__ x, const uint32_t* __restrict__ values,
                const uint32_t* __restrict__ positions, float* __restrict__ partial,
                __nv_bfloat16* __restrict__ y, int B, int K, int O, int KT, int steps_per_split) {
  using S = Slice<N, M>;
  constexpr int R = NT * 8;  // batch rows of the block
  constexpr uint32_t kMask = (1u << S::kBits) - 1;
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* xs = reinterpret_cast<__nv_bfloat16*>(smem);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3, h = S::H == 2 ? t >> 1 : 0;
  const int e0 = M == 8 ? 2 * t : 2 * (t & 1);  // the lane's first in-group offset
  const int ot0 = blockIdx.x * kBlockTiles;
  const int split = blockIdx.y, b0 = blockIdx.z * R;
  const int steps = KT / kStepTiles;
  const int st0 = split * steps_per_split, st1 = min(steps, st0 + steps_per_split);
  const int kspan = max(0, st1 - st0) * kStepTiles * kTileK;
  const int stride = kspan + 8;
  const int k0 = st0 * kStepTiles * kTileK;

  {  // stage x[b0 : b0 + R, k0 : k0 + kspan] row-major (zeros past B and K), 16-byte chunks
    const int chunks = kspan / 8, total = R * chunks;
    const bool vec = (K & 7) == 0;
    for (int i = threadIdx.x; i < total; i += blockDim.x) {
      const int b = i / chunks, ch = i - b * chunks;
      const int gb = b0 + b, gk = k0 + ch * 8;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (gb < B) {
        const __nv_bfloat16* src = x + static_cast<int64_t>(gb) * K + gk;
        if (vec && gk + 8 <= K) {
          v = __ldg(reinterpret_cast<const uint4*>(src));
        } else {
          __nv_bfloat16* e = reinterpret_cast<__nv_bfloat16*>(&v);
          for (int q = 0; q < 8 && gk + q < K; ++q) e[q] = src[q];
        }
      }
      *reinterpret_cast<uint4*>(xs + b * stride + ch * 8) = v;
    }
  }
  float* red = reinterpret_cast<float*>(smem + ((static_cast<size_t>(R) * stride * 2 + 15) / 16) * 16);
  for (int i = threadIdx.x; i < kBlockTiles * kTileO * R; i += blockDim.x) red[i] = 0.f;
  __syncthreads();

  float acc[kBlockTiles][NT][4];
#pragma unroll
  for (int a = 0; a < kBlockTiles; ++a)
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[a][n][c] = 0.f;

  const int64_t kt_stride = static_cast<int64_t>(8) * S::H * S::F / 2;  // words per k-tile
  const int64_t ot_vstride = static_cast<int64_t>(KT) * kt_stride;
  const int pk_tiles = KT / S::kPack;
  const int lane_slice = (g * S::H + h);
  for (int st = st0 + warp; st < st1; st += kWarps) {
    uint32_t v[kBlockTiles][kStepTiles][S::kWords];
    uint32_t p[kBlockTiles][kStepTiles / S::kPack];
#pragma unroll
    for (int a = 0; a < kBlockTiles; ++a) {
      const int ot = ot0 + a;
#pragma unroll
      for (int u = 0; u < kStepTiles; ++u) {
        const int kt = st * kStepTiles + u;
        Words<S::kWords>::load(values + ot * ot_vstride + kt * kt_stride + lane_slice * S::kWords,
                               v[a][u]);
      }
#pragma unroll
      for (int w = 0; w < kStepTiles / S::kPack; ++w) {
        const int pw = (st * kStepTiles) / S::kPack + w;
        p[a][w] = __ldg(positions + (static_cast<int64_t>(ot) * pk_tiles + pw) * 8 * S::H +
                        lane_slice);
      }
    }
    const int kl = (st - st0) * kStepTiles * kTileK;  // k of this step inside the slice
#pragma unroll
    for (int u = 0; u < kStepTiles; ++u) {
      uint32_t bf[NT][2];
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const __nv_bfloat16* row = xs + (n * 8 + g) * stride + kl + u * kTileK + 2 * t;
        bf[n][0] = *reinterpret_cast<const uint32_t*>(row);
        bf[n][1] = *reinterpret_cast<const uint32_t*>(row + 8);
      }
#pragma unroll
      for (int a = 0; a < kBlockTiles; ++a) {
        const uint32_t slot = p[a][u / S::kPack] >> ((u % S::kPack) * S::kSlot);
        uint32_t af[4];
#pragma unroll
        for (int rs = 0; rs < 4; ++rs) {  // rs = 2r + s: field base; register r + 2s
          uint32_t lo = 0, hi = 0;
#pragma unroll
          for (int j = 0; j < N; ++j) {
            const int f = rs * N + j;
            const uint32_t pos = (slot >> (f * S::kBits)) & kMask;
            const uint32_t val = (v[a][u][f / 2] >> (16 * (f % 2))) & 0xffffu;
            lo |= pos == static_cast<uint32_t>(e0) ? val : 0u;
            hi |= pos == static_cast<uint32_t>(e0 + 1) ? val : 0u;
          }
          af[(rs >> 1) + 2 * (rs & 1)] = lo | (hi << 16);
        }
#pragma unroll
        for (int n = 0; n < NT; ++n) Mma(acc[a][n], af, bf[n][0], bf[n][1]);
      }
    }
  }

  // Warps add their tiles into red[o][b] (o of the block, b of the batch tile), then the block
  // writes 64 x R outputs (bf16 y with one slice, fp32 partials otherwise).
#pragma unroll
  for (int a = 0; a < kBlockTiles; ++a)
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int o = a * kTileO + g + 8 * (c >> 1), b = n * 8 + 2 * t + (c & 1);
        atomicAdd(red + b * (kBlockTiles * kTileO) + o, acc[a][n][c]);
      }
  __syncthreads();
  const bool direct = gridDim.y == 1;
  for (int i = threadIdx.x; i < kBlockTiles * kTileO * R; i += blockDim.x) {
    const int b = i / (kBlockTiles * kTileO), o = i - b * (kBlockTiles * kTileO);
    const int gb = b0 + b, go = ot0 * kTileO + o;
    if (gb >= B || go >= O) continue;
    const int64_t idx = static_cast<int64_t>(gb) * O + go;
    if (direct) y[idx] = __float2bfloat16(red[i]);
    else partial[static_cast<int64_t>(split) * B * O + idx] = red[i];
  }
}

size_t TiledSmemBytes(int rows, int kspan) {
  return ((static_cast<size_t>(rows) * (kspan + 8) * 2 + 15) / 16) * 16 +
         static_cast<size_t>(kBlockTiles) * kTileO * rows * sizeof(float);
}

template <int N, int M, int NT>
cudaError_t LaunchTiled(cudaStream_t stream, const __nv_bfloat16* x, const uint32_t* values,
                        const uint32_t* positions, float* partial, __nv_bfloat16* y, int B, int K,
                        int O, int OT, int KT, int splits) {
  const int steps = KT / kStepTiles;
  const int steps_per_split = (steps + splits - 1) / splits;
  const size_t smem = TiledSmemBytes(NT * 8, steps_per_split * kStepTiles * kTileK);
  auto kernel = vs_tiled_kernel<N, M, NT>;
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  dim3 grid(OT / kBlockTiles, splits, (B + NT * 8 - 1) / (NT * 8));
  kernel<<<grid, kWarps * 32, smem, stream>>>(x, values, positions, partial, y, B, K, O, KT,
                                              steps_per_split);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess || splits == 1) return e;
  const int64_t size = static_cast<int64_t>(B) * O;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((size + threads - 1) / threads, 4096));
  vs_sum_splits_kernel<<<blocks, threads, 0, stream>>>(partial, y, size, splits);
  return cudaGetLastError();
}

template <int N, int M>
cudaError_t TiledBatch(cudaStream_t s, const __nv_bfloat16* x, const uint32_t* v,
                       const uint32_t* p, float* part, __nv_bfloat16* y, int B, int K, int O,
                       int OT, int KT, int splits) {
  if (B <= 8) return LaunchTiled<N, M, 1>(s, x, v, p, part, y, B, K, O, OT, KT, splits);
  return LaunchTiled<N, M, 2>(s, x, v, p, part, y, B, K, O, OT, KT, splits);
}

ffi::Error VsTiledImpl(cudaStream_t stream, ffi::Buffer<ffi::BF16> x,
                       ffi::Buffer<ffi::BF16> values, ffi::Buffer<ffi::U32> positions,
                       ffi::Result<ffi::Buffer<ffi::BF16>> y, ffi::Result<ffi::AnyBuffer> partial,
                       int64_t n, int64_t m, int64_t splits) {
  auto xd = x.dimensions(), vd = values.dimensions(), yd = y->dimensions();
  if (xd.size() != 2 || vd.size() != 5 || yd.size() != 2 || yd[0] != xd[0])
    return ffi::Error::InvalidArgument("nms_vs_tiled_matmul: x [B, K], values [OT, KT, 8, H, 4N]"
                                       ", y [B, O] expected");
  const int64_t B = xd[0], K = xd[1], O = yd[1], OT = vd[0], KT = vd[1];
  const int64_t H = m == 4 ? 2 : 1;
  if (!((n == 1 || n == 2) && (m == 4 || m == 8)) || vd[2] != 8 || vd[3] != H || vd[4] != 4 * n ||
      OT % kBlockTiles || KT % kStepTiles || OT * kTileO < O || KT * kTileK < K)
    return ffi::Error::InvalidArgument("nms_vs_tiled_matmul: operand shapes do not match");
  if (splits < 1 || (splits > 1 && partial->size_bytes() < static_cast<size_t>(splits * B * O * 4)))
    return ffi::Error::InvalidArgument("nms_vs_tiled_matmul: partials buffer too small");
  const int rows = B <= 8 ? 8 : 16;
  const int steps = static_cast<int>(KT / kStepTiles);
  const int steps_per_split = (steps + static_cast<int>(splits) - 1) / static_cast<int>(splits);
  if (TiledSmemBytes(rows, steps_per_split * kStepTiles * kTileK) > 200 * 1024)
    return ffi::Error::InvalidArgument("nms_vs_tiled_matmul: too few splits for shared memory");
  if (B == 0 || O == 0) return ffi::Error::Success();
  const auto* xp = reinterpret_cast<const __nv_bfloat16*>(x.typed_data());
  const auto* vp = reinterpret_cast<const uint32_t*>(values.typed_data());
  const uint32_t* pp = positions.typed_data();
  auto* yp = reinterpret_cast<__nv_bfloat16*>(y->typed_data());
  float* part = splits > 1 ? reinterpret_cast<float*>(partial->untyped_data()) : nullptr;
  const int b = static_cast<int>(B), k = static_cast<int>(K), o = static_cast<int>(O);
  const int ot = static_cast<int>(OT), kt = static_cast<int>(KT), sp = static_cast<int>(splits);
  cudaError_t e;
  if (m == 4)
    e = n == 1 ? TiledBatch<1, 4>(stream, xp, vp, pp, part, yp, b, k, o, ot, kt, sp)
               : TiledBatch<2, 4>(stream, xp, vp, pp, part, yp, b, k, o, ot, kt, sp);
  else
    e = n == 1 ? TiledBatch<1, 8>(stream, xp, vp, pp, part, yp, b, k, o, ot, kt, sp)
               : TiledBatch<2, 8>(stream, xp, vp, pp, part, yp, b, k, o, ot, kt, sp);
  if (e != cudaSuccess)
    return ffi::Error::Internal(std::string("nms_vs_tiled_matmul: ") + cudaGetErrorString(e));
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(nms_vs_matmul, VsMatmulImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Ret<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("n")
                                  .Attr<int64_t>("m")
                                  .Attr<int64_t>("splits"),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(nms_vs_tiled_matmul, VsTiledImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Ret<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("n")
                                  .Attr<int64_t>("m")
                                  .Attr<int64_t>("splits"),
                              {ffi::Traits::kCmdBufferCompatible});

// The same handler without the command-buffer trait (to measure what capture gains).
XLA_FFI_DEFINE_HANDLER_SYMBOL(nms_vs_tiled_matmul_nocb, VsTiledImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Ret<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("n")
                                  .Attr<int64_t>("m")
                                  .Attr<int64_t>("splits"));
