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
// multiplied where it was loaded. The loads of U byte rows (the unroll, 4 by default) are issued
// before any is used, so enough bytes are in flight to cover HBM latency; the first batch is
// issued before x is staged, and each next one as soon as the previous one is used. Warps reduce through shared memory; up to 8
// slices run as one thread-block cluster and are summed over distributed shared memory (one
// launch); more slices write fp32 partials [S, B, O] that a second kernel sums (StoreBlock).
//
// Handlers (attributes n, m: the pattern; splits: S, chosen by the Python wrapper):
//   nms_vs_matmul        x, values, positions -> y, partials (S*B*O fp32 beyond 8 slices, else
//                        1 byte); attribute unroll: U (0: the default; UnrollBuilt says which)
//   nms_vs_blocked_matmul the same on the blocked layout (values [O / 64, N, Gp, 64], positions
//                        [O / 64, N, Gq, 64], zero-padded to whole blocks): each block's slice
//                        is contiguous in memory, where the row layout strides by O per row
//   nms_vs_tiled_matmul  the tensor-core kernel on a prepare-d operand (below), same outputs;
//                        nms_vs_tiled_matmul_nocb is it without the command-buffer trait.
// Measured on an H200: benchmarks/h200_decode.md.

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cooperative_groups.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kWarps = 4;     // warps per block (each takes every kWarps-th byte row)
constexpr int kCols = 64;     // output columns per block
constexpr int kUnroll = 4;    // default byte rows whose loads are in flight together, per warp

// Whether vs_fwd_kernel is built with U byte rows per batch of loads for this tile and pattern:
// the default, and 8 or 16 where the batch's registers (N (Q + 1) U words) stay within 96 and
// the tile has at most 4 batch rows (more rows' accumulators leave no room).
constexpr bool UnrollBuilt(int bt, int n, int bits, int u) {
  return u == kUnroll || ((u == 8 || u == 16) && bt <= 4 && n * (8 / bits + 1) * u <= 96);
}
constexpr int kMaxCluster = 8;  // reduction slices summed through distributed shared memory

// How a block's totals tot[b][o] (R batch rows x 64 columns, fp32, in shared memory) reach y:
// one slice (gridDim.y == 1): written directly; up to kMaxCluster slices launched as one thread-
// block cluster along y: rank 0 adds the others' totals over distributed shared memory and
// writes y (one kernel, deterministic order); more slices: fp32 partials [S, B, O] for
// vs_sum_splits_kernel. Every thread of the block calls this.
template <int R>
__device__ void StoreBlock(const float* tot, bool clustered, int b0, int col0, int B, int O,
                           int split, float* __restrict__ partial,
                           __nv_bfloat16* __restrict__ y) {
  namespace cg = cooperative_groups;
  if (clustered) {
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();  // every block's totals are written
    if (cluster.block_rank() == 0) {
      const int ranks = static_cast<int>(cluster.num_blocks());
      for (int i = threadIdx.x; i < R * kCols; i += blockDim.x) {
        const int b = i / kCols, o = i - b * kCols;
        const int gb = b0 + b, go = col0 + o;
        if (gb >= B || go >= O) continue;
        float sum = tot[i];
        for (int r = 1; r < ranks; ++r) sum += cluster.map_shared_rank(tot, r)[i];
        y[static_cast<int64_t>(gb) * O + go] = __float2bfloat16(sum);
      }
    }
    cluster.sync();  // the other ranks' shared memory stays alive until rank 0 has read it
    return;
  }
  const bool direct = gridDim.y == 1;
  for (int i = threadIdx.x; i < R * kCols; i += blockDim.x) {
    const int b = i / kCols, o = i - b * kCols;
    const int gb = b0 + b, go = col0 + o;
    if (gb >= B || go >= O) continue;
    const int64_t idx = static_cast<int64_t>(gb) * O + go;
    if (direct) y[idx] = __float2bfloat16(tot[i]);
    else partial[static_cast<int64_t>(split) * B * O + idx] = tot[i];
  }
}

// Launches kernel on grid with blocks of threads, as clusters of gridDim.y blocks when asked.
template <typename Kernel, typename... Args>
cudaError_t LaunchMaybeClustered(Kernel kernel, dim3 grid, int threads, size_t smem,
                                 cudaStream_t stream, bool clustered, Args... args) {
  if (smem > 0) {  // raised once per kernel and size (the call costs host time): dynamic and
                   // static shared memory together may pass 48 KB only with the opt-in
    int device = 0;
    cudaError_t d = cudaGetDevice(&device);  // the attribute is per device
    if (d != cudaSuccess) return d;
    static std::mutex mu;
    static std::unordered_map<const void*, size_t> raised[64];
    std::lock_guard<std::mutex> lock(mu);
    size_t& have = raised[device & 63][reinterpret_cast<const void*>(kernel)];
    if (have < smem) {
      cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem));
      if (e != cudaSuccess) return e;
      have = smem;
    }
  }
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attr[1];
  if (clustered) {
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = 1;
    attr[0].val.clusterDim.y = grid.y;
    attr[0].val.clusterDim.z = 1;
    config.attrs = attr;
    config.numAttrs = 1;
  }
  return cudaLaunchKernelEx(&config, kernel, args...);
}

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
template <int BT, int N, int BITS, int U, bool BLOCKED>
__global__ void __launch_bounds__(kWarps * 32)
vs_fwd_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ values,
              const uint8_t* __restrict__ positions, float* __restrict__ partial,
              __nv_bfloat16* __restrict__ y, int B, int K, int O, int M, int Gp, int Gq,
              int rows_per_split, bool clustered) {
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

  float acc0[BT], acc1[BT];
#pragma unroll
  for (int b = 0; b < BT; ++b) acc0[b] = acc1[b] = 0.f;

  // Blocked operands are padded to whole blocks of columns: every pair is there and aligned.
  const bool pair = BLOCKED || c + 1 < O;
  const bool vec = BLOCKED || (pair && (O % 2 == 0));  // 4-byte aligned value pairs
  const bool active = BLOCKED || c < O;
  // Element (j, row, column c) of the values (rows Gp) or positions (rows Gq): [N, rows, O] or,
  // blocked, [O / 64, N, rows, 64] (this block's rows contiguous).
  const auto at = [&](int j, int row, int rows) -> int64_t {
    if (BLOCKED)
      return ((static_cast<int64_t>(blockIdx.x) * N + j) * rows + row) * kCols + 2 * lane;
    return (static_cast<int64_t>(j) * rows + row) * O + c;
  };
  constexpr int kStep = kWarps * U;  // byte rows of the block per batch of this warp's loads
  uint32_t vbits[U][N][Q];  // two bf16 values (columns c, c + 1) per entry
  uint32_t pbits[U][N];     // position bytes of columns c (low) and c + 1 (high)
  // Issues the loads of byte rows rb, rb + kWarps, .. (U of them) into vbits / pbits.
  const auto load = [&](int rb) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int r = rb + u * kWarps;
      const bool live = r < r1;
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const int64_t prow = at(j, r, Gq);
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
          const int64_t vrow = at(j, r * Q + t, Gp);
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
  };
  // Multiplies the loaded rows rb, rb + kWarps, .. into the accumulators.
  const auto use = [&](int rb) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
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
  };
  // The first batch is in flight before x is staged (the weights do not wait for x), so the two
  // HBM round trips overlap; each later batch is issued as soon as the previous one is used.
  if (active) load(r0 + warp);

  // Stage x[b0 : b0 + BT, k0 : k0 + kspan] as xs[k][b] (rows past B, columns past K: zeros), in
  // chunks of 8 k (16 bytes), kStage chunks per thread in flight. Consecutive threads take
  // consecutive batch rows of one chunk, so their 2-byte stores land in consecutive banks.
  {
    constexpr int kStage = 8;
    const int chunks = (kspan + 7) / 8;
    const int total = BT * chunks;
    const bool xvec = ((K | k0) & 7) == 0;
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
          if (xvec && gk + 8 <= K) {
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

  if (active) {
    for (int rb = r0 + warp; rb < r1; rb += kStep) {
      use(rb);
      if (rb + kStep < r1) load(rb + kStep);
    }
  }

  // Reduce the warps: warps 1.. write [warp - 1][b][column] partials, warp 0 adds them into
  // the block totals tot[b][column], which StoreBlock sends on.
  // At the same offset in every block (the last slice may be shorter): ranks of a cluster map it.
  const size_t kspan_max = static_cast<size_t>(rows_per_split) * Q * M;
  float* red = reinterpret_cast<float*>(smem + ((kspan_max * BT * 2 + 15) / 16) * 16);
  float* tot = red + (kWarps - 1) * BT * kCols;
  if (warp > 0) {
#pragma unroll
    for (int b = 0; b < BT; ++b) {
      red[((warp - 1) * BT + b) * kCols + 2 * lane] = acc0[b];
      red[((warp - 1) * BT + b) * kCols + 2 * lane + 1] = acc1[b];
    }
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int b = 0; b < BT; ++b) {
#pragma unroll
      for (int w = 0; w < kWarps - 1; ++w) {
        acc0[b] += red[(w * BT + b) * kCols + 2 * lane];
        acc1[b] += red[(w * BT + b) * kCols + 2 * lane + 1];
      }
      tot[b * kCols + 2 * lane] = acc0[b];
      tot[b * kCols + 2 * lane + 1] = acc1[b];
    }
  }
  __syncthreads();
  StoreBlock<BT>(tot, clustered, b0, blockIdx.x * kCols, B, O, split, partial, y);
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
         static_cast<size_t>(kWarps) * bt * kCols * sizeof(float);
}

template <int BT, int N, int BITS, int U, bool BLOCKED = false>
cudaError_t LaunchFwd(cudaStream_t stream, const __nv_bfloat16* x, const __nv_bfloat16* values,
                      const uint8_t* positions, float* partial, __nv_bfloat16* y, int B, int K,
                      int O, int M, int Gp, int Gq, int splits) {
  constexpr int Q = 8 / BITS;
  const int rows_per_split = (Gq + splits - 1) / splits;
  const size_t smem = SmemBytes(BT, rows_per_split * Q * M);
  dim3 grid((O + kCols - 1) / kCols, splits, (B + BT - 1) / BT);
  const bool clustered = splits > 1 && splits <= kMaxCluster;
  cudaError_t e = LaunchMaybeClustered(vs_fwd_kernel<BT, N, BITS, U, BLOCKED>, grid, kWarps * 32, smem,
                                       stream, clustered,
                                       x, values, positions, partial, y, B, K, O, M, Gp, Gq,
                                       rows_per_split, clustered);
  if (e != cudaSuccess || splits == 1 || clustered) return e;
  const int64_t size = static_cast<int64_t>(B) * O;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((size + threads - 1) / threads, 4096));
  vs_sum_splits_kernel<<<blocks, threads, 0, stream>>>(partial, y, size, splits);
  return cudaGetLastError();
}

// LaunchFwd at the unroll u (UnrollBuilt; the handler has checked it), or u = 0: the blocked
// operand layout at the default unroll.
template <int BT, int N, int BITS>
cudaError_t LaunchUnroll(cudaStream_t s, int u, const __nv_bfloat16* x, const __nv_bfloat16* v,
                         const uint8_t* p, float* part, __nv_bfloat16* y, int B, int K, int O,
                         int M, int Gp, int Gq, int splits) {
  if (u == 0)
    return LaunchFwd<BT, N, BITS, kUnroll, true>(s, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
  if constexpr (UnrollBuilt(BT, N, BITS, 8))
    if (u == 8) return LaunchFwd<BT, N, BITS, 8>(s, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
  if constexpr (UnrollBuilt(BT, N, BITS, 16))
    if (u == 16)
      return LaunchFwd<BT, N, BITS, 16>(s, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
  return LaunchFwd<BT, N, BITS, kUnroll>(s, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
}

template <int N, int BITS>
cudaError_t DispatchBatch(cudaStream_t s, int bt, int u, const __nv_bfloat16* x,
                          const __nv_bfloat16* v, const uint8_t* p, float* part,
                          __nv_bfloat16* y, int B, int K, int O, int M, int Gp, int Gq,
                          int splits) {
  switch (bt) {
    case 1: return LaunchUnroll<1, N, BITS>(s, u, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
    case 2: return LaunchUnroll<2, N, BITS>(s, u, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
    case 4: return LaunchUnroll<4, N, BITS>(s, u, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
    case 8: return LaunchUnroll<8, N, BITS>(s, u, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
    default:
      return LaunchUnroll<16, N, BITS>(s, u, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
  }
}

template <int BITS>
cudaError_t DispatchN(cudaStream_t s, int n, int bt, int u, const __nv_bfloat16* x,
                      const __nv_bfloat16* v, const uint8_t* p, float* part, __nv_bfloat16* y,
                      int B, int K, int O, int M, int Gp, int Gq, int splits) {
  switch (n) {
    case 1: return DispatchBatch<1, BITS>(s, bt, u, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
    case 2: return DispatchBatch<2, BITS>(s, bt, u, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
    case 3: return DispatchBatch<3, BITS>(s, bt, u, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
    default:
      return DispatchBatch<4, BITS>(s, bt, u, x, v, p, part, y, B, K, O, M, Gp, Gq, splits);
  }
}

// Both layouts: rows (values [N, Gp, O], positions [N, Gq, O]) or blocked ([O / 64, N, Gp, 64],
// [O / 64, N, Gq, 64]; the output width from y).
ffi::Error VsMatmulAny(cudaStream_t stream, bool blocked, ffi::Buffer<ffi::BF16> x,
                       ffi::Buffer<ffi::BF16> values, ffi::Buffer<ffi::U8> positions,
                       ffi::Result<ffi::Buffer<ffi::BF16>> y, ffi::Result<ffi::AnyBuffer> partial,
                       int64_t n, int64_t m, int64_t splits, int64_t unroll) {
  const char* name = blocked ? "nms_vs_blocked_matmul" : "nms_vs_matmul";
  auto xd = x.dimensions(), vd = values.dimensions(), pd = positions.dimensions();
  auto yd = y->dimensions();
  const size_t rank = blocked ? 4 : 3;
  if (xd.size() != 2 || vd.size() != rank || pd.size() != rank || yd.size() != 2 ||
      yd[0] != xd[0])
    return ffi::Error::InvalidArgument(std::string(name) + ": x [B, K], y [B, O] and values, "
                                       "positions [N, G, O] (blocked: [O / 64, N, G, 64]) expected");
  const int64_t B = xd[0], K = xd[1], O = yd[1];
  const int64_t Gp = vd[rank - 2], Gq = pd[rank - 2];
  const int64_t vn = vd[rank - 3], pn = pd[rank - 3];
  const bool cols_ok = blocked ? vd[0] * kCols >= O && vd[0] == pd[0] && vd[3] == kCols &&
                                     pd[3] == kCols
                               : vd[2] == O && pd[2] == O;
  const int bits = m <= 4 ? 2 : 4;
  const int q = 8 / bits;
  if (n < 1 || n > 4 || m < 3 || m > 16 || vn != n || pn != n || !cols_ok || Gp != q * Gq ||
      K % m != 0 || K / m > Gp)
    return ffi::Error::InvalidArgument(std::string(name) +
                                       ": operand shapes do not match the pattern");
  if (splits < 1 || (splits > kMaxCluster &&
                      partial->size_bytes() < static_cast<size_t>(splits * B * O * 4)))
    return ffi::Error::InvalidArgument(std::string(name) + ": partials buffer too small");
  const int bt = B >= 16 ? 16 : B >= 8 ? 8 : B >= 4 ? 4 : B >= 2 ? 2 : 1;
  int u = unroll == 0 ? kUnroll : static_cast<int>(unroll);
  if (blocked && u != kUnroll)
    return ffi::Error::InvalidArgument(std::string(name) + ": built at the default unroll only");
  if (!UnrollBuilt(bt, static_cast<int>(n), bits, u))
    return ffi::Error::InvalidArgument(std::string(name) + ": unroll " + std::to_string(unroll) +
                                       " is not built for this pattern and batch tile");
  if (blocked) u = 0;  // LaunchUnroll's code for the blocked layout
  if (B == 0 || O == 0) return ffi::Error::Success();
  const auto* xp = reinterpret_cast<const __nv_bfloat16*>(x.typed_data());
  const auto* vp = reinterpret_cast<const __nv_bfloat16*>(values.typed_data());
  const uint8_t* pp = positions.typed_data();
  auto* yp = reinterpret_cast<__nv_bfloat16*>(y->typed_data());
  float* part = splits > kMaxCluster ? reinterpret_cast<float*>(partial->untyped_data()) : nullptr;
  cudaError_t e = bits == 2
      ? DispatchN<2>(stream, n, bt, u, xp, vp, pp, part, yp, B, K, O, m, Gp, Gq, splits)
      : DispatchN<4>(stream, n, bt, u, xp, vp, pp, part, yp, B, K, O, m, Gp, Gq, splits);
  if (e != cudaSuccess)
    return ffi::Error::Internal(std::string(name) + ": " + cudaGetErrorString(e));
  return ffi::Error::Success();
}

ffi::Error VsMatmulImpl(cudaStream_t stream, ffi::Buffer<ffi::BF16> x,
                        ffi::Buffer<ffi::BF16> values, ffi::Buffer<ffi::U8> positions,
                        ffi::Result<ffi::Buffer<ffi::BF16>> y, ffi::Result<ffi::AnyBuffer> partial,
                        int64_t n, int64_t m, int64_t splits, int64_t unroll) {
  return VsMatmulAny(stream, false, x, values, positions, y, partial, n, m, splits, unroll);
}

ffi::Error VsBlockedImpl(cudaStream_t stream, ffi::Buffer<ffi::BF16> x,
                         ffi::Buffer<ffi::BF16> values, ffi::Buffer<ffi::U8> positions,
                         ffi::Result<ffi::Buffer<ffi::BF16>> y, ffi::Result<ffi::AnyBuffer> partial,
                         int64_t n, int64_t m, int64_t splits) {
  return VsMatmulAny(stream, true, x, values, positions, y, partial, n, m, splits, 0);
}


// ---------------------------------------------------------------------------------------------
// The tensor-core kernel: packed weights decoded straight into mma.sync fragments.
//
// Operand (nmsparse.kernels.value_serial.prepare, N <= 2, M in {4, 8}): W^T goes to
// mma.m16n8k16 in 16 x 16 tiles (rows o, columns k) whose k-columns are permuted so that lane
// (g, t) holds rows o0 + g and o0 + g + 8 at the contiguous k 4t .. 4t + 3 of the tile (the B
// operand, x, uses the same permutation, so the product is unchanged). Those four k are half of
// group q = t / 2 (M = 8) or all of group q = t (M = 4): the lane's *slice* is that group of its
// two rows, 2N kept values (field f = r N + j) and their positions, kPack k-tiles per 32-bit word.
// values [OT, KT, 8, Q, 2N] bf16, positions [OT, KT / kPack, 8, Q] u32 (Q = 16 / M).
// A lane builds fragment registers a[r] = {W[o_r][4t], W[o_r][4t + 1]} and a[r + 2] = {.. 4t + 2,
// 4t + 3} by comparing slot positions with its in-group offsets: no shared memory, no dense tile.
// Its x fragment is one 8-byte load (x is small and L2-resident). A block is 4 warps on 64 output
// columns (4 mma tiles); warps take the block's reduction slice 4 k-tiles (a step) at a time, the
// loads of the next step in flight while the current one is decoded and multiplied.

constexpr int kTileK = 16, kTileO = 16, kStepTiles = 4, kBlockTiles = 4;

template <int N, int M>
struct Slice {
  static constexpr int Q = kTileK / M;  // groups (slices) per k-tile and row pair
  static constexpr int F = 2 * N;
  static constexpr int kBits = M == 4 ? 2 : 4;
  static constexpr int kNeed = F * kBits;
  static constexpr int kSlot = kNeed <= 8 ? 8 : kNeed <= 16 ? 16 : 32;
  static constexpr int kPack = 32 / kSlot;
  static constexpr int kWords = N;  // 32-bit words of values per slice
};

__device__ __forceinline__ void Mma(float* d, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                    uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <int W>
struct Words;
template <>
struct Words<1> {
  __device__ static void load(const uint32_t* p, uint32_t* w) { w[0] = __ldg(p); }
};
template <>
struct Words<2> {
  __device__ static void load(const uint32_t* p, uint32_t* w) {
    uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
    w[0] = u.x, w[1] = u.y;
  }
};

// One step of one warp: 4 k-tiles of the block's 4 mma tiles, loaded to registers (Load), then
// decoded and multiplied (Compute).
template <int N, int M, int NT>
struct TiledStep {
  using S = Slice<N, M>;
  uint32_t v[kBlockTiles][kStepTiles][S::kWords];
  uint32_t p[kBlockTiles][kStepTiles / S::kPack];
  uint32_t bf[kStepTiles][NT][2];

  __device__ __forceinline__ void Load(const uint32_t* __restrict__ values,
                                       const uint32_t* __restrict__ positions,
                                       const __nv_bfloat16* __restrict__ x, int st, int ot0, int KT,
                                       int lane_slice, int b0, int g, int t, int B, int K) {
    const int64_t kt_words = static_cast<int64_t>(8) * S::Q * S::kWords;
    const int pk_tiles = KT / S::kPack;
#pragma unroll
    for (int a = 0; a < kBlockTiles; ++a) {
      const int64_t ot = ot0 + a;
#pragma unroll
      for (int u = 0; u < kStepTiles; ++u) {
        const int64_t kt = static_cast<int64_t>(st) * kStepTiles + u;
        Words<S::kWords>::load(values + (ot * KT + kt) * kt_words + lane_slice * S::kWords,
                               v[a][u]);
      }
#pragma unroll
      for (int w = 0; w < kStepTiles / S::kPack; ++w) {
        const int64_t pw = static_cast<int64_t>(st) * kStepTiles / S::kPack + w;
        p[a][w] = __ldg(positions + (ot * pk_tiles + pw) * 8 * S::Q + lane_slice);
      }
    }
    const bool kvec = (K & 3) == 0;
#pragma unroll
    for (int u = 0; u < kStepTiles; ++u) {
      const int k = (st * kStepTiles + u) * kTileK + 4 * t;
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const int row = b0 + n * 8 + g;
        uint32_t w0 = 0, w1 = 0;
        if (row < B) {
          const __nv_bfloat16* src = x + static_cast<int64_t>(row) * K + k;
          if (kvec && k + 3 < K) {
            uint2 u2 = __ldg(reinterpret_cast<const uint2*>(src));
            w0 = u2.x, w1 = u2.y;
          } else {
            uint16_t e[4] = {0, 0, 0, 0};
            for (int q = 0; q < 4 && k + q < K; ++q) e[q] = __bfloat16_as_ushort(src[q]);
            w0 = e[0] | (static_cast<uint32_t>(e[1]) << 16);
            w1 = e[2] | (static_cast<uint32_t>(e[3]) << 16);
          }
        }
        bf[u][n][0] = w0;
        bf[u][n][1] = w1;
      }
    }
  }

  __device__ __forceinline__ void Compute(float (&acc)[kBlockTiles][NT][4], uint32_t e0) const {
    constexpr uint32_t kMask = (1u << S::kBits) - 1;
#pragma unroll
    for (int u = 0; u < kStepTiles; ++u) {
#pragma unroll
      for (int a = 0; a < kBlockTiles; ++a) {
        const uint32_t slot = p[a][u / S::kPack] >> ((u % S::kPack) * S::kSlot);
        uint32_t frag[4];  // a0 (row g, k 4t..), a1 (row g + 8), a2 (row g, k 4t + 2..), a3
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          uint32_t e[4] = {0, 0, 0, 0};
#pragma unroll
          for (int j = 0; j < N; ++j) {
            const int f = r * N + j;
            const uint32_t pos = (slot >> (f * S::kBits)) & kMask;
            const uint32_t val = (v[a][u][f / 2] >> (16 * (f % 2))) & 0xffffu;
#pragma unroll
            for (int i = 0; i < 4; ++i) e[i] |= pos == e0 + i ? val : 0u;
          }
          frag[r] = e[0] | (e[1] << 16);
          frag[r + 2] = e[2] | (e[3] << 16);
        }
#pragma unroll
        for (int n = 0; n < NT; ++n)
          Mma(acc[a][n], frag[0], frag[1], frag[2], frag[3], bf[u][n][0], bf[u][n][1]);
      }
    }
  }
};

template <int N, int M, int NT>
__global__ void __launch_bounds__(kWarps * 32)
vs_tiled_kernel(const __nv_bfloat16* __restrict__ x, const uint32_t* __restrict__ values,
                const uint32_t* __restrict__ positions, float* __restrict__ partial,
                __nv_bfloat16* __restrict__ y, int B, int K, int O, int KT, int steps_per_split,
                bool clustered) {
  using S = Slice<N, M>;
  constexpr int R = NT * 8;  // batch rows of the block
  __shared__ float tot[R * kCols];  // the block's totals [b][o]

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int q = M == 8 ? t >> 1 : t;
  const uint32_t e0 = M == 8 ? 4 * (t & 1) : 0;  // the lane's first in-group offset
  const int ot0 = blockIdx.x * kBlockTiles;
  const int split = blockIdx.y, b0 = blockIdx.z * R;
  const int steps = KT / kStepTiles;
  const int st0 = split * steps_per_split, st1 = min(steps, st0 + steps_per_split);
  const int lane_slice = g * S::Q + q;
  for (int i = threadIdx.x; i < R * kCols; i += blockDim.x) tot[i] = 0.f;

  float acc[kBlockTiles][NT][4];
#pragma unroll
  for (int a = 0; a < kBlockTiles; ++a)
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[a][n][c] = 0.f;

  TiledStep<N, M, NT> cur, nxt;
  int st = st0 + warp;
  if (st < st1) cur.Load(values, positions, x, st, ot0, KT, lane_slice, b0, g, t, B, K);
  for (; st < st1; st += 2 * kWarps) {  // two steps per trip: cur, then nxt (double buffer)
    const int s1 = st + kWarps, s2 = st + 2 * kWarps;
    if (s1 < st1) nxt.Load(values, positions, x, s1, ot0, KT, lane_slice, b0, g, t, B, K);
    cur.Compute(acc, e0);
    if (s1 >= st1) break;
    if (s2 < st1) cur.Load(values, positions, x, s2, ot0, KT, lane_slice, b0, g, t, B, K);
    nxt.Compute(acc, e0);
  }

  __syncthreads();  // tot is zeroed
#pragma unroll
  for (int a = 0; a < kBlockTiles; ++a)
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int o = a * kTileO + g + 8 * (c >> 1), b = n * 8 + 2 * t + (c & 1);
        atomicAdd(tot + b * kCols + o, acc[a][n][c]);
      }
  __syncthreads();
  StoreBlock<R>(tot, clustered, b0, ot0 * kTileO, B, O, split, partial, y);
}

template <int N, int M, int NT>
cudaError_t LaunchTiled(cudaStream_t stream, const __nv_bfloat16* x, const uint32_t* values,
                        const uint32_t* positions, float* partial, __nv_bfloat16* y, int B, int K,
                        int O, int OT, int KT, int splits) {
  const int steps = KT / kStepTiles;
  const int steps_per_split = (steps + splits - 1) / splits;
  dim3 grid(OT / kBlockTiles, splits, (B + NT * 8 - 1) / (NT * 8));
  const bool clustered = splits > 1 && splits <= kMaxCluster;
  cudaError_t e = LaunchMaybeClustered(vs_tiled_kernel<N, M, NT>, grid, kWarps * 32, 0, stream,
                                       clustered, x,
                                       values, positions, partial, y, B, K, O, KT,
                                       steps_per_split, clustered);
  if (e != cudaSuccess || splits == 1 || clustered) return e;
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
    return ffi::Error::InvalidArgument("nms_vs_tiled_matmul: x [B, K], values [OT, KT, 8, Q, 2N]"
                                       ", y [B, O] expected");
  const int64_t B = xd[0], K = xd[1], O = yd[1], OT = vd[0], KT = vd[1];
  const int64_t Q = 16 / m;
  if (!((n == 1 || n == 2) && (m == 4 || m == 8)) || vd[2] != 8 || vd[3] != Q || vd[4] != 2 * n ||
      OT % kBlockTiles || KT % kStepTiles || OT * kTileO < O || KT * kTileK < K)
    return ffi::Error::InvalidArgument("nms_vs_tiled_matmul: operand shapes do not match");
  if (splits < 1 || (splits > kMaxCluster &&
                      partial->size_bytes() < static_cast<size_t>(splits * B * O * 4)))
    return ffi::Error::InvalidArgument("nms_vs_tiled_matmul: partials buffer too small");
  if (B == 0 || O == 0) return ffi::Error::Success();
  const auto* xp = reinterpret_cast<const __nv_bfloat16*>(x.typed_data());
  const auto* vp = reinterpret_cast<const uint32_t*>(values.typed_data());
  const uint32_t* pp = positions.typed_data();
  auto* yp = reinterpret_cast<__nv_bfloat16*>(y->typed_data());
  float* part = splits > kMaxCluster ? reinterpret_cast<float*>(partial->untyped_data()) : nullptr;
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


// ---------------------------------------------------------------------------------------------
// The pipelined tensor-core kernel: the tiled layout above streamed through shared memory.
//
// Same operand, fragments and block columns (4 mma tiles = 64 output columns) as vs_tiled_kernel,
// built for the copy ceiling instead of for few registers:
// (1) a block is 8 warps; each takes the slice's steps in turn and keeps ST - 1 of them in flight
//     with cp.async into a warp-private ring of ST stages (a stage: the step's packed bytes of the
//     block's 4 mma tiles and its rows of x), so a warp never waits on a load it issued one step
//     ago and an SM holds tens of KB of loads in flight;
// (2) a lane decodes a row's slice with one table lookup and two byte permutes: the table (built
//     per block in shared memory, one copy per bank so a warp's 32 lookups never conflict) maps
//     (in-group half, row, the row's position fields) to the PRMT selectors that place the row's
//     kept values -- or zeros -- at the lane's four k;
// (3) x is staged with the weights (only the block's live rows, each 64 k padded to 160 bytes so
//     a warp's fragment loads are conflict-free), not loaded from L2 in the multiply loop;
// (4) with BULK, the ring is filled by the copy engine instead of the lanes' 16-byte cp.async:
//     a stage is 8 contiguous chunks of the prepared layout (the values and the position words of
//     each of the 4 mma tiles) plus one 128-byte chunk per x row, one cp.async.bulk per lane,
//     counted on the stage's mbarrier; all ST slots are in flight and a slot is refilled as soon
//     as the warp has used it. A ragged K (K % 8, or the last step of K % 64) stages x by hand.
// Measured on an H200: benchmarks/h200_decode.md.

constexpr int kPipeWarps = 8;     // warps per block of the pipelined kernel
constexpr int kXRowBytes = 160;   // one staged x row: 64 k of bf16 (128 bytes) + 32 bytes of pad
constexpr size_t kSmemPerSm = 227 * 1024;  // shared memory one block may take (Hopper; an SM
                                           // has 228 KB, 1 KB of each block is the driver's)

template <int N, int M, int NT>
struct Pipe {
  using S = Slice<N, M>;
  static constexpr int R = NT * 8;                          // batch rows of the block
  static constexpr int kValTile = 8 * S::Q * 2 * N * 2;     // value bytes of one (o, k) tile
  static constexpr int kPosRow = 8 * S::Q * 4;              // bytes of one position-word row
  static constexpr int kValStep = kStepTiles * kValTile;    // one o-tile's values of one step
  static constexpr int kPosStep = kStepTiles / S::kPack * kPosRow;
  static constexpr int kW = kBlockTiles * (kValStep + kPosStep);  // weight bytes of a stage
  static constexpr int kFieldBits = N * S::kBits;           // one row's position fields
  // Table entries: (h, p0, p1) at 2:8, (h, r, p) at 1:8, (p0, p1) at 2:4, (r, p) at 1:4.
  static constexpr int kEntries = M == 8 ? (N == 2 ? 128 : 32) : (N == 2 ? 16 : 8);
  static constexpr int kLutBytes = kEntries * 32 * 4;       // one copy per bank
  static_assert(kValStep % 16 == 0 && kPosStep % 16 == 0, "16-byte cp.async chunks");
  static constexpr size_t kStatic = R * kCols * 4;  // the block totals (static shared memory)
  static constexpr int kBarBytes = kPipeWarps * 4 * 8;      // an mbarrier per warp and stage
  static size_t Smem(int xrows, int stages) {
    return kLutBytes + kBarBytes +
           static_cast<size_t>(kPipeWarps) * stages * (kW + xrows * kXRowBytes);
  }
};

__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, int src_bytes) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int Pending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending));
}

// The bulk-copy (TMA) ring: one mbarrier per stage, completed by the bytes of the stage's copies.
__device__ __forceinline__ uint32_t SharedAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void MbarInit(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(SharedAddr(bar)), "r"(count));
}
__device__ __forceinline__ void MbarFenceInit() {  // inits visible to the copy engine
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void MbarExpect(uint64_t* bar, int bytes) {  // arrive + expect bytes
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(SharedAddr(bar)),
               "r"(bytes) : "memory");
}
__device__ __forceinline__ void MbarWait(uint64_t* bar, uint32_t phase) {
  uint32_t done = 0;
  do {
    asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                 " selp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done) : "r"(SharedAddr(bar)), "r"(phase) : "memory");
  } while (!done);
}
// bytes (a multiple of 16, both addresses 16-byte aligned) from global to this block's shared
// memory, counted on bar when they land.
__device__ __forceinline__ void BulkCopy(void* smem, const void* gmem, int bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
      ::"r"(SharedAddr(smem)), "l"(gmem), "r"(bytes), "r"(SharedAddr(bar)) : "memory");
}

// The selector word of (h, r, fields): byte e (e = 0..3, the lane's k 4t + e) holds the two PRMT
// nibbles that fetch the bf16 kept at in-group offset (M == 8 ? 4h : 0) + e -- bytes 2s, 2s + 1
// of the row's value word (s: the slot that holds it) -- or 4, 4: zero.
template <int N, int M>
__device__ uint32_t PipeSelector(int h, int r, uint32_t fields) {
  using S = Slice<N, M>;
  constexpr uint32_t kMask = (1u << S::kBits) - 1;
  uint32_t sel = 0;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const uint32_t off = (M == 8 ? 4 * h : 0) + e;
    uint32_t nib = 0x44;
#pragma unroll
    for (int j = N - 1; j >= 0; --j) {  // the lowest matching slot wins (fillers sit at 0)
      const int half = N == 2 ? j : r;  // N = 2: word r = {slot 0, slot 1}; N = 1: {row 0, row 1}
      if (((fields >> (j * S::kBits)) & kMask) == off) nib = (2 * half) | ((2 * half + 1) << 4);
    }
    sel |= nib << (8 * e);
  }
  return sel;
}

// The table entry of row r's position fields f for a lane of in-group half h, and its inverse.
template <int N, int M>
__device__ __forceinline__ uint32_t PipeEntry(uint32_t f, int r, int h) {
  if (M == 8 && N == 2) return (h << 6) | ((f >> 1) & 0x38) | (f & 7);  // p0 | p1 << 4, p < 8
  if (M == 8) return (h << 4) | (r << 3) | (f & 7);
  if (N == 2) return f;
  return (r << 2) | f;
}
template <int N, int M>
__device__ __forceinline__ void PipeEntryFields(int e, int& h, int& r, uint32_t& fields) {
  h = 0, r = 0;
  if (M == 8 && N == 2) h = e >> 6, fields = (e & 7) | (((e >> 3) & 7) << 4);
  else if (M == 8) h = e >> 4, r = (e >> 3) & 1, fields = e & 7;
  else if (N == 2) fields = e;
  else r = e >> 2, fields = e & 3;
}

template <int N, int M, int NT, int ST, bool BULK, int PROBE = 0>
__global__ void __launch_bounds__(kPipeWarps * 32)
vs_pipe_kernel(const __nv_bfloat16* __restrict__ x, const unsigned char* __restrict__ values,
               const unsigned char* __restrict__ positions, float* __restrict__ partial,
               __nv_bfloat16* __restrict__ y, int B, int K, int O, int KT, int steps_per_split,
               bool clustered) {
  using P = Pipe<N, M, NT>;
  using S = Slice<N, M>;
  constexpr int R = P::R;
  __shared__ float tot[R * kCols];
  extern __shared__ __align__(16) unsigned char smem[];
  uint32_t* lut = reinterpret_cast<uint32_t*>(smem);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int q = M == 8 ? t >> 1 : t, h = M == 8 ? t & 1 : 0;
  const int ot0 = blockIdx.x * kBlockTiles;
  const int split = blockIdx.y, b0 = blockIdx.z * R;
  const int xrows = min(R, B - b0);  // the block's live batch rows: only they are staged
  const int stage_bytes = P::kW + xrows * kXRowBytes;
  const int steps = KT / kStepTiles;
  const int st0 = split * steps_per_split, st1 = min(steps, st0 + steps_per_split);
  const int lane_slice = g * S::Q + q;
  const int mine = st0 + warp < st1 ? (st1 - st0 - warp + kPipeWarps - 1) / kPipeWarps : 0;
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + P::kLutBytes) + warp * 4;
  unsigned char* ring = smem + P::kLutBytes + P::kBarBytes + warp * ST * stage_bytes;
  const int pk_rows = KT / S::kPack;
  const bool kvec = (K & 7) == 0;

  // Rows b of x's 64 k of step st into xs with plain loads and stores, zero past K.
  auto fill_x = [&](unsigned char* xs, int st) {
    for (int c = lane; c < xrows * 8; c += 32) {  // row b, 8 k per chunk
      const int b = c >> 3, gb = b0 + b, gk = st * kStepTiles * kTileK + (c & 7) * 8;
      const __nv_bfloat16* src = x + static_cast<int64_t>(gb) * K + gk;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (kvec && gk + 8 <= K) {
        v = *reinterpret_cast<const uint4*>(src);
      } else {
        uint16_t e[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) e[u] = gk + u < K ? __bfloat16_as_ushort(src[u]) : 0;
        v = *reinterpret_cast<const uint4*>(e);
      }
      *reinterpret_cast<uint4*>(xs + b * kXRowBytes + (c & 7) * 16) = v;
    }
  };

  // BULK: step i of this warp into ring slot i % ST with bulk copies, one per lane: the values
  // (lanes 0-3) and positions (4-7) of the block's 4 mma tiles, each one contiguous chunk of the
  // prepared layout, and the x rows (lanes 8..), completing the slot's mbarrier.
  auto load_bulk = [&](int i) {
    if (i >= mine) return;
    const int st = st0 + warp + i * kPipeWarps;
    unsigned char* stage = ring + (i % ST) * stage_bytes;
    unsigned char* xs = stage + P::kW;
    uint64_t* bar = bars + i % ST;
    const bool xbulk = kvec && (st + 1) * kStepTiles * kTileK <= K;
    if (!xbulk) fill_x(xs, st);  // a ragged K: the last step (or every step) by hand
    if (lane == 0) MbarExpect(bar, P::kW + (xbulk ? xrows * kTileK * kStepTiles * 2 : 0));
    if (lane < kBlockTiles) {
      BulkCopy(stage + lane * P::kValStep,
               values + (static_cast<int64_t>(ot0 + lane) * KT + st * kStepTiles) * P::kValTile,
               P::kValStep, bar);
    } else if (lane < 2 * kBlockTiles) {
      const int a = lane - kBlockTiles;
      BulkCopy(stage + kBlockTiles * P::kValStep + a * P::kPosStep,
               positions + (static_cast<int64_t>(ot0 + a) * pk_rows +
                            st * kStepTiles / S::kPack) * P::kPosRow,
               P::kPosStep, bar);
    } else if (xbulk && lane - 2 * kBlockTiles < xrows) {
      const int b = lane - 2 * kBlockTiles;
      BulkCopy(xs + b * kXRowBytes,
               x + static_cast<int64_t>(b0 + b) * K + st * kStepTiles * kTileK,
               kStepTiles * kTileK * 2, bar);
    }
  };

  // Issue step i of this warp (st = st0 + warp + i * kPipeWarps) into ring slot i % ST.
  auto load = [&](int i) {
    if (i < mine) {
      const int st = st0 + warp + i * kPipeWarps;
      unsigned char* stage = ring + (i % ST) * stage_bytes;
#pragma unroll
      for (int c = lane; c < kBlockTiles * P::kValStep / 16; c += 32) {
        const int a = c / (P::kValStep / 16), w = c % (P::kValStep / 16);
        const unsigned char* src = values +
            (static_cast<int64_t>(ot0 + a) * KT + st * kStepTiles) * P::kValTile + w * 16;
        CpAsync16(stage + c * 16, src, 16);
      }
#pragma unroll
      for (int c = lane; c < kBlockTiles * P::kPosStep / 16; c += 32) {
        const int a = c / (P::kPosStep / 16), w = c % (P::kPosStep / 16);
        const unsigned char* src = positions +
            (static_cast<int64_t>(ot0 + a) * pk_rows + st * kStepTiles / S::kPack) * P::kPosRow +
            w * 16;
        CpAsync16(stage + kBlockTiles * P::kValStep + c * 16, src, 16);
      }
      unsigned char* xs = stage + P::kW;
      if (!kvec) {
        fill_x(xs, st);
      } else {
        for (int c = lane; c < xrows * 8; c += 32) {  // row b, 8 k per chunk
          const int b = c >> 3, gb = b0 + b, gk = st * kStepTiles * kTileK + (c & 7) * 8;
          const bool live = gk < K;
          CpAsync16(xs + b * kXRowBytes + (c & 7) * 16,
                    live ? x + static_cast<int64_t>(gb) * K + gk : x, live ? 16 : 0);
        }
      }
    }
    CpAsyncCommit();  // an empty group past the warp's last step keeps the count uniform
  };

  if constexpr (BULK) {  // every slot in flight: a slot is refilled once its step is used
    if (lane == 0)
      for (int j = 0; j < ST; ++j) MbarInit(bars + j, 1);
    MbarFenceInit();
    __syncwarp();
#pragma unroll
    for (int i = 0; i < ST; ++i) load_bulk(i);
  } else {
#pragma unroll
    for (int i = 0; i < ST - 1; ++i) load(i);
  }

  // The table, one copy per bank: entry e of lane l at word e * 32 + l (word by word, so that
  // a warp's stores fall in 32 banks).
  for (int i = threadIdx.x; i < P::kEntries * 32; i += blockDim.x) {
    int hh, r;
    uint32_t fields;
    PipeEntryFields<N, M>(i >> 5, hh, r, fields);
    lut[i] = PipeSelector<N, M>(hh, r, fields);
  }
  for (int i = threadIdx.x; i < R * kCols; i += blockDim.x) tot[i] = 0.f;
  __syncthreads();
  const uint32_t* lut_lane = lut + lane;

  float acc[kBlockTiles][NT][4];
#pragma unroll
  for (int a = 0; a < kBlockTiles; ++a)
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[a][n][c] = 0.f;

  for (int i = 0; i < mine; ++i) {
    if constexpr (BULK) {
      MbarWait(bars + i % ST, (i / ST) & 1);  // step i's bulk copies have landed ...
      __syncwarp();                           // ... and the lanes' plain stores of a ragged x
    } else {
      CpAsyncWait<ST - 2>();  // step i has landed (this lane's copies) ...
      __syncwarp();           // ... and every lane's; slot (i - 1) % ST is free again
      load(i + ST - 1);
    }
    const unsigned char* stage = ring + (i % ST) * stage_bytes;
    const unsigned char* xs = stage + P::kW;
#pragma unroll
    for (int u = 0; u < kStepTiles; ++u) {
      uint32_t bx[NT][2];
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        uint2 v = make_uint2(0, 0);
        if (n * 8 + g < xrows)
          v = *reinterpret_cast<const uint2*>(xs + (n * 8 + g) * kXRowBytes + u * kTileK * 2 +
                                              8 * t);
        bx[n][0] = v.x, bx[n][1] = v.y;
      }
#pragma unroll
      for (int a = 0; a < kBlockTiles; ++a) {
        const unsigned char* vt = stage + a * P::kValStep + u * P::kValTile;
        uint32_t word[2];
        if (N == 2) {
          const uint2 v = *reinterpret_cast<const uint2*>(vt + lane_slice * 8);
          word[0] = v.x, word[1] = v.y;
        } else {
          word[0] = word[1] = *reinterpret_cast<const uint32_t*>(vt + lane_slice * 4);
        }
        const uint32_t slot =
            *reinterpret_cast<const uint32_t*>(stage + kBlockTiles * P::kValStep +
                                               a * P::kPosStep + (u / S::kPack) * P::kPosRow +
                                               lane_slice * 4) >> ((u % S::kPack) * S::kSlot);
        uint32_t frag[4];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const uint32_t f = (slot >> (r * P::kFieldBits)) & ((1u << P::kFieldBits) - 1);
          const uint32_t sel = lut_lane[PipeEntry<N, M>(f, r, h) * 32];
          frag[r] = __byte_perm(word[r], 0u, sel);
          frag[r + 2] = __byte_perm(word[r], 0u, sel >> 16);
        }
        if (PROBE == 0) {
#pragma unroll
          for (int n = 0; n < NT; ++n)
            Mma(acc[a][n], frag[0], frag[1], frag[2], frag[3], bx[n][0], bx[n][1]);
        } else if (PROBE == 1) {  // timing probe: the decode without the MMA
          acc[a][0][0] += __uint_as_float((frag[0] ^ frag[1] ^ frag[2] ^ frag[3] ^ bx[0][0]) &
                                          0x3fffffffu);
        }
        if (PROBE == 2)  // timing probe: the loads without the decode
          acc[a][0][0] += __uint_as_float((word[0] ^ word[1] ^ slot ^ bx[0][0]) & 0x3fffffffu);
      }
    }
    if constexpr (BULK) {
      __syncwarp();  // every lane is done with slot i % ST
      load_bulk(i + ST);
    }
  }
  if constexpr (!BULK) CpAsyncWait<0>();

#pragma unroll
  for (int a = 0; a < kBlockTiles; ++a)
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int o = a * kTileO + g + 8 * (c >> 1), b = n * 8 + 2 * t + (c & 1);
        atomicAdd(tot + b * kCols + o, acc[a][n][c]);
      }
  __syncthreads();
  StoreBlock<R>(tot, clustered, b0, ot0 * kTileO, B, O, split, partial, y);
}

template <int N, int M, int NT, int ST, bool BULK, int PROBE = 0>
cudaError_t LaunchPipe(cudaStream_t stream, const __nv_bfloat16* x, const unsigned char* values,
                       const unsigned char* positions, float* partial, __nv_bfloat16* y, int B,
                       int K, int O, int OT, int KT, int splits) {
  using P = Pipe<N, M, NT>;
  const int steps = KT / kStepTiles;
  const int steps_per_split = (steps + splits - 1) / splits;
  dim3 grid(OT / kBlockTiles, splits, (B + P::R - 1) / P::R);
  const bool clustered = splits > 1 && splits <= kMaxCluster;
  const size_t smem = P::Smem(std::min(B, P::R), ST);
  cudaError_t e = LaunchMaybeClustered(vs_pipe_kernel<N, M, NT, ST, BULK, PROBE>, grid,
                                       kPipeWarps * 32, smem, stream, clustered, x, values,
                                       positions, partial, y, B, K, O, KT, steps_per_split,
                                       clustered);
  if (e != cudaSuccess || splits == 1 || clustered) return e;
  const int64_t size = static_cast<int64_t>(B) * O;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((size + threads - 1) / threads, 4096));
  vs_sum_splits_kernel<<<blocks, threads, 0, stream>>>(partial, y, size, splits);
  return cudaGetLastError();
}

// Ring depth: stages if given (2, 3 or 4), else the deepest of 4, 3 that lets two blocks share an
// SM, else the deepest of 4, 3, 2 that fits one block. 0 if the asked depth does not fit.
template <int N, int M, int NT>
int PipeStages(int B, int stages) {
  using P = Pipe<N, M, NT>;
  const int xrows = std::min(B, P::R);
  const auto fits = [&](int st, int blocks) {  // 1 KB per block is the driver's
    return blocks * (P::Smem(xrows, st) + P::kStatic + 1024) <= kSmemPerSm + 1024;
  };
  if (stages > 0) return fits(stages, 1) ? stages : 0;
  for (int st : {4, 3})
    if (fits(st, 2)) return st;
  for (int st : {4, 3, 2})
    if (fits(st, 1)) return st;
  return 0;
}

template <int N, int M, int NT, bool BULK>
cudaError_t PipeLaunchStages(cudaStream_t s, int st, int probe, const __nv_bfloat16* x,
                             const unsigned char* v, const unsigned char* p, float* part,
                             __nv_bfloat16* y, int B, int K, int O, int OT, int KT, int splits) {
  if constexpr (N == 2 && M == 8) {
    if (probe == 1)
      return LaunchPipe<N, M, NT, 4, BULK, 1>(s, x, v, p, part, y, B, K, O, OT, KT, splits);
    if (probe == 2)
      return LaunchPipe<N, M, NT, 4, BULK, 2>(s, x, v, p, part, y, B, K, O, OT, KT, splits);
  }
  switch (st) {
    case 2: return LaunchPipe<N, M, NT, 2, BULK>(s, x, v, p, part, y, B, K, O, OT, KT, splits);
    case 3: return LaunchPipe<N, M, NT, 3, BULK>(s, x, v, p, part, y, B, K, O, OT, KT, splits);
    default: return LaunchPipe<N, M, NT, 4, BULK>(s, x, v, p, part, y, B, K, O, OT, KT, splits);
  }
}

template <int N, int M>
cudaError_t PipeBatch(cudaStream_t s, int stages, int probe, bool bulk, int* chosen,
                      const __nv_bfloat16* x, const unsigned char* v, const unsigned char* p,
                      float* part, __nv_bfloat16* y, int B, int K, int O, int OT, int KT,
                      int splits) {
  const bool small = B <= 8;
  *chosen = small ? PipeStages<N, M, 1>(B, stages) : PipeStages<N, M, 2>(B, stages);
  if (*chosen == 0) return cudaSuccess;
  const int c = *chosen;
  const auto go = [&](auto launch) {
    return launch(s, c, probe, x, v, p, part, y, B, K, O, OT, KT, splits);
  };
  if (small)
    return bulk ? go(PipeLaunchStages<N, M, 1, true>) : go(PipeLaunchStages<N, M, 1, false>);
  return bulk ? go(PipeLaunchStages<N, M, 2, true>) : go(PipeLaunchStages<N, M, 2, false>);
}

ffi::Error VsPipeImpl(cudaStream_t stream, ffi::Buffer<ffi::BF16> x,
                      ffi::Buffer<ffi::BF16> values, ffi::Buffer<ffi::U32> positions,
                      ffi::Result<ffi::Buffer<ffi::BF16>> y, ffi::Result<ffi::AnyBuffer> partial,
                      int64_t n, int64_t m, int64_t splits, int64_t stages, int64_t probe,
                      int64_t bulk) {
  auto xd = x.dimensions(), vd = values.dimensions(), yd = y->dimensions();
  if (xd.size() != 2 || vd.size() != 5 || yd.size() != 2 || yd[0] != xd[0])
    return ffi::Error::InvalidArgument("nms_vs_pipe_matmul: x [B, K], values [OT, KT, 8, Q, 2N]"
                                       ", y [B, O] expected");
  const int64_t B = xd[0], K = xd[1], O = yd[1], OT = vd[0], KT = vd[1];
  const int64_t Q = 16 / m;
  if (!((n == 1 || n == 2) && (m == 4 || m == 8)) || vd[2] != 8 || vd[3] != Q || vd[4] != 2 * n ||
      OT % kBlockTiles || KT % kStepTiles || OT * kTileO < O || KT * kTileK < K)
    return ffi::Error::InvalidArgument("nms_vs_pipe_matmul: operand shapes do not match");
  if (stages < 0 || stages == 1 || stages > 4)
    return ffi::Error::InvalidArgument("nms_vs_pipe_matmul: stages is 0 (chosen), 2, 3 or 4");
  if (splits < 1 || (splits > kMaxCluster &&
                      partial->size_bytes() < static_cast<size_t>(splits * B * O * 4)))
    return ffi::Error::InvalidArgument("nms_vs_pipe_matmul: partials buffer too small");
  if (B == 0 || O == 0) return ffi::Error::Success();
  const auto* xp = reinterpret_cast<const __nv_bfloat16*>(x.typed_data());
  const auto* vp = reinterpret_cast<const unsigned char*>(values.untyped_data());
  const auto* pp = reinterpret_cast<const unsigned char*>(positions.untyped_data());
  auto* yp = reinterpret_cast<__nv_bfloat16*>(y->typed_data());
  float* part = splits > kMaxCluster ? reinterpret_cast<float*>(partial->untyped_data()) : nullptr;
  const int b = static_cast<int>(B), k = static_cast<int>(K), o = static_cast<int>(O);
  const int ot = static_cast<int>(OT), kt = static_cast<int>(KT), sp = static_cast<int>(splits);
  const int st = static_cast<int>(stages), pr = static_cast<int>(probe);
  const bool bk = bulk != 0;
  int chosen = 0;
  cudaError_t e;
  const auto go = [&](auto batch) {
    return batch(stream, st, pr, bk, &chosen, xp, vp, pp, part, yp, b, k, o, ot, kt, sp);
  };
  if (m == 4)
    e = n == 1 ? go(PipeBatch<1, 4>) : go(PipeBatch<2, 4>);
  else
    e = n == 1 ? go(PipeBatch<1, 8>) : go(PipeBatch<2, 8>);
  if (chosen == 0)
    return ffi::Error::InvalidArgument("nms_vs_pipe_matmul: a ring of " + std::to_string(stages) +
                                       " stages does not fit in shared memory");
  if (e != cudaSuccess)
    return ffi::Error::Internal(std::string("nms_vs_pipe_matmul: ") + cudaGetErrorString(e));
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
                                  .Attr<int64_t>("splits")
                                  .Attr<int64_t>("unroll"),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(nms_vs_blocked_matmul, VsBlockedImpl,
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

XLA_FFI_DEFINE_HANDLER_SYMBOL(nms_vs_pipe_matmul, VsPipeImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::U32>>()
                                  .Ret<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("n")
                                  .Attr<int64_t>("m")
                                  .Attr<int64_t>("splits")
                                  .Attr<int64_t>("stages")
                                  .Attr<int64_t>("probe")
                                  .Attr<int64_t>("bulk"),
                              {ffi::Traits::kCmdBufferCompatible});
