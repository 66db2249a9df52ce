// nmsparse native backend: 2:4 sparse tensor-core products (cuSPARSELt) behind the XLA FFI.
//
// Conventions (all row-major unless said): the structured operand A is [m, k] with every group of
// 4 consecutive entries of a row holding at most 2 nonzeros; the dense operand is X [n, k] and the
// product is Y [n, m] = X A^T, i.e. the column-major cuSPARSELt product Y^T = A X^T. For a dense
// layer y = x W (W [K, O]): forward A = (W*M_ff)^T [O, K], backward-data A = W*M_bp [K, O].
//
// Handlers:
//   nms_sptc_prune   fp32 W [K, O] -> masked bf16 A_ff [O, K], A_bp [K, O] (bdwp) and the M_ff
//                    keep bits [K/M, O] (bit r = row g*M + r kept): one pass, nm_mask's rule.
//   nms_sptc_lib_compress   bf16 A [m, k] -> cuSPARSELt compressed bytes (the library's kernel).
//   nms_sptc_compress fp32 W [K, O] -> compressed A_ff, A_bp and keep bits in one pass (our kernel,
//                    writing the library's layout; checked against nms_sptc_lib_compress in tests).
//   nms_sptc_spmm    compressed A, bf16 X [n, k] -> bf16 Y [n, m] (fp32 accumulate).
// Plans are built once per (device, m, n, k) and cached for the process; nms_sptc_prepare (called
// from Python when a product is traced) picks the algorithm with cusparseLtMatmulSearch. The
// handlers allocate nothing: workspaces are extra outputs sized at trace time.

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cusparseLt.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#define NMS_CUDA(expr)                                                                   \
  do {                                                                                   \
    cudaError_t e_ = (expr);                                                             \
    if (e_ != cudaSuccess)                                                               \
      return ffi::Error::Internal(std::string(#expr ": ") + cudaGetErrorString(e_));     \
  } while (0)

#define NMS_CSLT(expr)                                                                   \
  do {                                                                                   \
    cusparseStatus_t s_ = (expr);                                                        \
    if (s_ != CUSPARSE_STATUS_SUCCESS)                                                   \
      return ffi::Error::Internal(std::string(#expr ": ") + cusparseLtGetErrorString(s_)); \
  } while (0)

constexpr uint32_t kAlign = 16;

// ---------------------------------------------------------------------------------------------
// Library state: one handle per device, one plan per (device, m, n, k).

struct Handle {
  cusparseLtHandle_t h;
};

struct Plan {
  cusparseLtMatDescriptor_t a, b, c;
  cusparseLtMatmulDescriptor_t mm;
  cusparseLtMatmulAlgSelection_t alg;
  cusparseLtMatmulPlan_t plan;
  size_t workspace = 0;
  bool searched = false;
  int alg_id = -1;
};

std::mutex g_mu;
std::map<int, std::unique_ptr<Handle>> g_handles;
std::map<std::tuple<int, int64_t, int64_t, int64_t>, std::unique_ptr<Plan>> g_plans;

ffi::Error GetHandle(int device, Handle** out) {
  auto it = g_handles.find(device);
  if (it != g_handles.end()) {
    *out = it->second.get();
    return ffi::Error::Success();
  }
  auto h = std::make_unique<Handle>();
  NMS_CSLT(cusparseLtInit(&h->h));
  *out = h.get();
  g_handles[device] = std::move(h);
  return ffi::Error::Success();
}

ffi::Error InitSparseDesc(Handle* h, cusparseLtMatDescriptor_t* d, int64_t m, int64_t k) {
  NMS_CSLT(cusparseLtStructuredDescriptorInit(&h->h, d, m, k, k, kAlign, CUDA_R_16BF,
                                              CUSPARSE_ORDER_ROW, CUSPARSELT_SPARSITY_50_PERCENT));
  return ffi::Error::Success();
}

ffi::Error GetPlan(Handle* h, int device, int64_t m, int64_t n, int64_t k, Plan** out) {
  auto key = std::make_tuple(device, m, n, k);
  auto it = g_plans.find(key);
  if (it != g_plans.end()) {
    *out = it->second.get();
    return ffi::Error::Success();
  }
  auto p = std::make_unique<Plan>();
  if (auto e = InitSparseDesc(h, &p->a, m, k); e.failure()) return e;
  // X [n, k] row-major is the column-major k x n operand; Y [n, m] row-major is column-major m x n.
  NMS_CSLT(cusparseLtDenseDescriptorInit(&h->h, &p->b, k, n, k, kAlign, CUDA_R_16BF,
                                         CUSPARSE_ORDER_COL));
  NMS_CSLT(cusparseLtDenseDescriptorInit(&h->h, &p->c, m, n, m, kAlign, CUDA_R_16BF,
                                         CUSPARSE_ORDER_COL));
  NMS_CSLT(cusparseLtMatmulDescriptorInit(&h->h, &p->mm, CUSPARSE_OPERATION_NON_TRANSPOSE,
                                          CUSPARSE_OPERATION_NON_TRANSPOSE, &p->a, &p->b, &p->c,
                                          &p->c, CUSPARSE_COMPUTE_32F));
  NMS_CSLT(cusparseLtMatmulAlgSelectionInit(&h->h, &p->alg, &p->mm, CUSPARSELT_MATMUL_ALG_DEFAULT));
  NMS_CSLT(cusparseLtMatmulPlanInit(&h->h, &p->plan, &p->mm, &p->alg));
  NMS_CSLT(cusparseLtMatmulGetWorkspace(&h->h, &p->plan, &p->workspace));
  *out = p.get();
  g_plans[key] = std::move(p);
  return ffi::Error::Success();
}

// The handle of the stream's device, under g_mu.
ffi::Error StreamHandle(cudaStream_t stream, int* device, Handle** h) {
  NMS_CUDA(cudaStreamGetDevice(stream, device));
  return GetHandle(*device, h);
}

// ---------------------------------------------------------------------------------------------
// N:M ranking with nm_mask's rule: compare |w| as integer keys (fp32 bits, sign cleared); of two
// equal keys the lower index wins. Returns the keep bitmap of one group of M values.

template <int M>
__device__ __forceinline__ uint32_t KeepBits(const float (&v)[M], int n) {
  int32_t key[M];
#pragma unroll
  for (int r = 0; r < M; ++r) key[r] = __float_as_int(v[r]) & 0x7FFFFFFF;
  uint32_t keep = 0;
#pragma unroll
  for (int r = 0; r < M; ++r) {
    int rank = 0;
#pragma unroll
    for (int s = 0; s < M; ++s) {
      if (s < r) rank += key[s] >= key[r];
      if (s > r) rank += key[s] > key[r];
    }
    keep |= (rank < n) ? (1u << r) : 0u;
  }
  return keep;
}

// One thread per (FF group g, column o): W[g*M + r, o], r < M. Coalesced over o.
template <int M, typename KeepT>
__global__ void PruneFFKernel(const float* __restrict__ w, int64_t K, int64_t O, int n,
                              __nv_bfloat16* __restrict__ a_ff, KeepT* __restrict__ keep_out) {
  int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  int64_t g = blockIdx.y;
  if (o >= O) return;
  float v[M];
#pragma unroll
  for (int r = 0; r < M; ++r) v[r] = w[(g * M + r) * O + o];
  uint32_t keep = KeepBits<M>(v, n);
  keep_out[g * O + o] = static_cast<KeepT>(keep);
  if (a_ff != nullptr) {
#pragma unroll
    for (int r = 0; r < M; ++r)
      a_ff[o * K + g * M + r] = __float2bfloat16((keep >> r) & 1 ? v[r] : 0.0f);
  }
}

// One thread per (row k, BP group h): W[k, h*M + r]. A_bp [K, O] is W*M_bp in place.
template <int M>
__global__ void PruneBPKernel(const float* __restrict__ w, int64_t K, int64_t O, int n,
                              __nv_bfloat16* __restrict__ a_bp) {
  int64_t groups = O / M;
  int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (t >= K * groups) return;
  int64_t k = t / groups, h = t % groups;
  float v[M];
#pragma unroll
  for (int r = 0; r < M; ++r) v[r] = w[k * O + h * M + r];
  uint32_t keep = KeepBits<M>(v, n);
#pragma unroll
  for (int r = 0; r < M; ++r)
    a_bp[k * O + h * M + r] = __float2bfloat16((keep >> r) & 1 ? v[r] : 0.0f);
}

template <int M, typename KeepT>
void LaunchPrune(cudaStream_t s, const float* w, int64_t K, int64_t O, int n, __nv_bfloat16* a_ff,
                 __nv_bfloat16* a_bp, KeepT* keep) {
  dim3 block(256);
  dim3 grid_ff((O + 255) / 256, K / M);
  PruneFFKernel<M, KeepT><<<grid_ff, block, 0, s>>>(w, K, O, n, a_ff, keep);
  if (a_bp != nullptr) {
    int64_t total = K * (O / M);
    PruneBPKernel<M><<<(total + 255) / 256, block, 0, s>>>(w, K, O, n, a_bp);
  }
}

bool DispatchPrune(int m, cudaStream_t s, const float* w, int64_t K, int64_t O, int n,
                   __nv_bfloat16* a_ff, __nv_bfloat16* a_bp, uint8_t* keep) {
  switch (m) {
    case 4: LaunchPrune<4>(s, w, K, O, n, a_ff, a_bp, keep); return true;
    case 8: LaunchPrune<8>(s, w, K, O, n, a_ff, a_bp, keep); return true;
    default: return false;
  }
}

ffi::Error CheckPattern(int64_t n, int64_t m, int64_t K, int64_t O, bool bp) {
  if (n < 1 || n > 2 || (m != 4 && m != 8 && m != 16))
    return ffi::Error::InvalidArgument("sparse_tc: pattern must have N <= 2 and M in (4, 8, 16), got " +
                                       std::to_string(n) + ":" + std::to_string(m));
  if (K % m || (bp && O % m))
    return ffi::Error::InvalidArgument("sparse_tc: kernel [" + std::to_string(K) + ", " +
                                       std::to_string(O) + "] not divisible by M=" +
                                       std::to_string(m));
  return ffi::Error::Success();
}

ffi::Error PruneImpl(cudaStream_t stream, ffi::Buffer<ffi::F32> w,
                     ffi::Result<ffi::Buffer<ffi::BF16>> a_ff,
                     ffi::Result<ffi::Buffer<ffi::BF16>> a_bp,
                     ffi::Result<ffi::AnyBuffer> keep, int64_t n, int64_t m, bool bp) {
  auto dims = w.dimensions();
  if (dims.size() != 2) return ffi::Error::InvalidArgument("nms_sptc_prune: W must be 2-D");
  int64_t K = dims[0], O = dims[1];
  if (auto e = CheckPattern(n, m, K, O, bp); e.failure()) return e;
  auto* ff = reinterpret_cast<__nv_bfloat16*>(a_ff->untyped_data());
  auto* bpp = bp ? reinterpret_cast<__nv_bfloat16*>(a_bp->untyped_data()) : nullptr;
  if (m == 16)
    LaunchPrune<16>(stream, w.typed_data(), K, O, static_cast<int>(n), ff, bpp,
                    keep->typed_data<uint16_t>());
  else
    DispatchPrune(static_cast<int>(m), stream, w.typed_data(), K, O, static_cast<int>(n), ff, bpp,
                  keep->typed_data<uint8_t>());
  NMS_CUDA(cudaGetLastError());
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Our compressor: cuSPARSELt's layout for a row-major bf16 [m, k] operand (m, k multiples of 64),
// as worked out by scripts/bench_sptc.py's probe and checked against the library in tests:
//   values: [m, k/2] row-major, each group of 4 contributing its 2 stored entries in column order;
//   metadata (after the m*k value bytes): one 4-bit code (i0 | i1 << 2, i0 < i1 the stored
//   positions) per group, in blocks of 64 rows x 32 columns (256 bytes), blocks row-major over
//   (row / 64, column / 32); inside a block the code of row i, group g (g < 8) is nibble
//   (i / 16) * 128 + (i % 8) * 16 + ((i / 8) % 2) + (g % 4) * 4 + (g / 4) * 2.
// A group of 4 with fewer than 2 kept entries (an N:M group with M > 4) stores zeros at the
// lowest free positions.

constexpr int kTileRows = 64, kTileCols = 64;  // one CTA: two metadata blocks of 64 x 32
constexpr int kChunk = 16;                       // columns of A per thread: 8 stored values
constexpr int kThreads = kTileRows * (kTileCols / kChunk);
constexpr int kPitch = kTileCols + 1;            // padded smem rows: conflict-free column reads

__device__ __forceinline__ int MetaNibble(int i, int g) {
  return (i / 16) * 128 + (i % 8) * 16 + ((i / 8) % 2) + (g % 4) * 4 + (g / 4) * 2;
}

// The 2 stored positions of a group of 4 with keep bits kb (popcount <= 2), ascending.
__device__ __forceinline__ void StoredPositions(uint32_t kb, int* i0, int* i1) {
  int first = -1, second = -1;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    if ((kb >> r) & 1) {
      if (first < 0) first = r; else second = r;
    }
  }
#pragma unroll
  for (int r = 0; r < 4; ++r) {  // fill from the lowest free positions
    if (!((kb >> r) & 1)) {
      if (first < 0) first = r;
      else if (second < 0 && r != first) second = r;
    }
  }
  *i0 = min(first, second);
  *i1 = max(first, second);
}

// One CTA per 64 x 64 tile of A. The tile of W behind it (64 rows of 64 contiguous floats) is
// staged in shared memory with coalesced 16-byte loads; thread (c, i) then takes row i of the A
// tile, columns [16c, 16c + 16): its N:M groups, their 8 stored bf16 values (one 16-byte store)
// and their codes (into the tile's two metadata blocks in shared memory, written out whole).
// kTransposed: A = W^T (forward operand, groups along W's rows; also writes the keep bits
// [K/M, O]); else A = W (backward operand, groups along W's columns).
template <int M, bool kTransposed, typename KeepT>
__global__ void __launch_bounds__(kThreads)
CompressKernel(const float* __restrict__ w, int64_t K, int64_t O, int n, uint8_t* __restrict__ out,
               KeepT* __restrict__ keep_out) {
  __shared__ float tile[kTileRows * kPitch];
  __shared__ uint32_t meta_s[2 * 64];
  const int64_t m = kTransposed ? O : K, k = kTransposed ? K : O;
  const int64_t i0 = (int64_t)blockIdx.y * kTileRows, j0 = (int64_t)blockIdx.x * kTileCols;
  const int t = threadIdx.x;
  if (t < 128) meta_s[t] = 0;
  // W rows of this tile: forward W[j0 + r, i0 .. i0+64), backward W[i0 + r, j0 .. j0+64).
  const float* base = kTransposed ? w + j0 * O + i0 : w + i0 * O + j0;
#pragma unroll
  for (int u = 0; u < kTileRows * kTileCols / 4 / kThreads; ++u) {
    const int idx = t + u * kThreads, row = idx / 16, col = (idx % 16) * 4;
    const float4 v4 = *reinterpret_cast<const float4*>(base + row * O + col);
    float* dst = tile + row * kPitch + col;
    dst[0] = v4.x; dst[1] = v4.y; dst[2] = v4.z; dst[3] = v4.w;
  }
  __syncthreads();
  const int i = t % kTileRows, c = t / kTileRows;
  __align__(16) __nv_bfloat16 vals[8];
#pragma unroll
  for (int q = 0; q < kChunk / M; ++q) {
    float v[M];
#pragma unroll
    for (int r = 0; r < M; ++r) {
      const int jj = c * kChunk + q * M + r;  // column of the A tile
      v[r] = kTransposed ? tile[jj * kPitch + i] : tile[i * kPitch + jj];
    }
    const uint32_t keep = KeepBits<M>(v, n);
    if (kTransposed) keep_out[((j0 + c * kChunk) / M + q) * O + i0 + i] = static_cast<KeepT>(keep);
#pragma unroll
    for (int s = 0; s < M / 4; ++s) {
      int p0, p1;
      StoredPositions((keep >> (4 * s)) & 0xF, &p0, &p1);
      const int slot = q * (M / 4) + s;  // group of 4 within the thread's 16 columns
      vals[2 * slot] = __float2bfloat16(((keep >> (4 * s + p0)) & 1) ? v[4 * s + p0] : 0.0f);
      vals[2 * slot + 1] = __float2bfloat16(((keep >> (4 * s + p1)) & 1) ? v[4 * s + p1] : 0.0f);
      const int g4 = c * (kChunk / 4) + slot;  // group of 4 within the tile: block g4 / 8
      const int nib = (g4 / 8) * 512 + MetaNibble(i, g4 % 8);
      atomicOr(&meta_s[nib / 8], static_cast<uint32_t>(p0 | (p1 << 2)) << (4 * (nib % 8)));
    }
  }
  __nv_bfloat16* values = reinterpret_cast<__nv_bfloat16*>(out) + (i0 + i) * (k / 2) +
                          (j0 + c * kChunk) / 2;
  *reinterpret_cast<uint4*>(values) = *reinterpret_cast<const uint4*>(vals);
  __syncthreads();
  uint32_t* meta = reinterpret_cast<uint32_t*>(out + m * k) +
                   ((i0 / kTileRows) * (k / 32) + j0 / 32) * 64;
  if (t < 128) meta[t] = meta_s[t];
}

template <int M, typename KeepT>
void LaunchCompress(cudaStream_t s, const float* w, int64_t K, int64_t O, int n, uint8_t* ff,
                    uint8_t* bp, KeepT* keep) {
  CompressKernel<M, true, KeepT><<<dim3(K / kTileCols, O / kTileRows), kThreads, 0, s>>>(
      w, K, O, n, ff, keep);
  if (bp != nullptr)
    CompressKernel<M, false, KeepT><<<dim3(O / kTileCols, K / kTileRows), kThreads, 0, s>>>(
        w, K, O, n, bp, keep);
}

ffi::Error CompressImpl(cudaStream_t stream, ffi::Buffer<ffi::F32> w,
                        ffi::Result<ffi::Buffer<ffi::U8>> ff, ffi::Result<ffi::Buffer<ffi::U8>> bp,
                        ffi::Result<ffi::AnyBuffer> keep, int64_t n, int64_t m, bool with_bp) {
  auto dims = w.dimensions();
  if (dims.size() != 2) return ffi::Error::InvalidArgument("nms_sptc_compress: W must be 2-D");
  const int64_t K = dims[0], O = dims[1];
  if (auto e = CheckPattern(n, m, K, O, with_bp); e.failure()) return e;
  if (K % 64 || O % 64)
    return ffi::Error::InvalidArgument("nms_sptc_compress: W [" + std::to_string(K) + ", " +
                                       std::to_string(O) + "] must be a multiple of 64 both ways");
  const int64_t want = K * O + K * O / 8;
  if (ff->size_bytes() != static_cast<size_t>(want) ||
      (with_bp && bp->size_bytes() != static_cast<size_t>(want)))
    return ffi::Error::InvalidArgument("nms_sptc_compress: compressed outputs must have " +
                                       std::to_string(want) + " bytes");
  uint8_t* ffp = ff->typed_data();
  uint8_t* bpp = with_bp ? bp->typed_data() : nullptr;
  const float* wp = w.typed_data();
  const int nn = static_cast<int>(n);
  switch (m) {
    case 4: LaunchCompress<4>(stream, wp, K, O, nn, ffp, bpp, keep->typed_data<uint8_t>()); break;
    case 8: LaunchCompress<8>(stream, wp, K, O, nn, ffp, bpp, keep->typed_data<uint8_t>()); break;
    case 16: LaunchCompress<16>(stream, wp, K, O, nn, ffp, bpp, keep->typed_data<uint16_t>()); break;
  }
  NMS_CUDA(cudaGetLastError());
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// The library's compressor (reference and fallback for our own).

ffi::Error LibCompressImpl(cudaStream_t stream, ffi::Buffer<ffi::BF16> a,
                           ffi::Result<ffi::Buffer<ffi::U8>> out,
                           ffi::Result<ffi::Buffer<ffi::U8>> buf) {
  auto dims = a.dimensions();
  if (dims.size() != 2) return ffi::Error::InvalidArgument("nms_sptc_lib_compress: A must be 2-D");
  int64_t m = dims[0], k = dims[1];
  std::lock_guard<std::mutex> lock(g_mu);
  int device = 0;
  Handle* h = nullptr;
  if (auto e = StreamHandle(stream, &device, &h); e.failure()) return e;
  cusparseLtMatDescriptor_t desc;
  if (auto e = InitSparseDesc(h, &desc, m, k); e.failure()) return e;
  size_t size = 0, buf_size = 0;
  NMS_CSLT(cusparseLtSpMMACompressedSize2(&h->h, &desc, &size, &buf_size));
  if (size != out->size_bytes() || buf_size > buf->size_bytes()) {
    cusparseLtMatDescriptorDestroy(&desc);
    return ffi::Error::InvalidArgument(
        "nms_sptc_lib_compress: buffers of " + std::to_string(out->size_bytes()) + " / " +
        std::to_string(buf->size_bytes()) + " bytes, the library wants " + std::to_string(size) +
        " / " + std::to_string(buf_size));
  }
  NMS_CSLT(cusparseLtSpMMACompress2(&h->h, &desc, 1, CUSPARSE_OPERATION_NON_TRANSPOSE,
                                    a.untyped_data(), out->untyped_data(),
                                    buf_size ? buf->untyped_data() : nullptr, stream));
  cusparseLtMatDescriptorDestroy(&desc);
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// The product.

// Builds the plan of (device, m, n, k) if needed and, the first time, picks its algorithm with
// cusparseLtMatmulSearch on scratch operands of the right shapes (filled with a nonzero byte
// pattern: timings on zeros flatter). Must not run under stream capture (it synchronises).
ffi::Error PreparePlan(int device, int64_t m, int64_t n, int64_t k, Plan** out) {
  Handle* h = nullptr;
  if (auto e = GetHandle(device, &h); e.failure()) return e;
  if (auto e = GetPlan(h, device, m, n, k, out); e.failure()) return e;
  Plan* p = *out;
  if (p->searched) return ffi::Error::Success();
  size_t a_size = 0, a_buf = 0;
  NMS_CSLT(cusparseLtSpMMACompressedSize2(&h->h, &p->a, &a_size, &a_buf));
  size_t x_size = n * k * 2, y_size = n * m * 2;
  void *a = nullptr, *x = nullptr, *y = nullptr, *ws = nullptr;
  cudaStream_t s = nullptr;
  NMS_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  NMS_CUDA(cudaMalloc(&a, a_size));
  NMS_CUDA(cudaMalloc(&x, x_size));
  NMS_CUDA(cudaMalloc(&y, y_size));
  if (p->workspace) NMS_CUDA(cudaMalloc(&ws, p->workspace));
  NMS_CUDA(cudaMemsetAsync(a, 0x3C, a_size, s));
  NMS_CUDA(cudaMemsetAsync(x, 0x3C, x_size, s));
  float alpha = 1.0f, beta = 0.0f;
  cusparseStatus_t st = cusparseLtMatmulSearch(&h->h, &p->plan, &alpha, a, x, &beta, y, y, ws, &s, 1);
  cudaStreamSynchronize(s);
  cudaFree(a);
  cudaFree(x);
  cudaFree(y);
  if (ws) cudaFree(ws);
  cudaStreamDestroy(s);
  if (st != CUSPARSE_STATUS_SUCCESS)
    return ffi::Error::Internal(std::string("cusparseLtMatmulSearch: ") + cusparseLtGetErrorString(st));
  NMS_CSLT(cusparseLtMatmulAlgGetAttribute(&h->h, &p->alg, CUSPARSELT_MATMUL_ALG_CONFIG_ID,
                                           &p->alg_id, sizeof(p->alg_id)));
  NMS_CSLT(cusparseLtMatmulGetWorkspace(&h->h, &p->plan, &p->workspace));
  p->searched = true;
  return ffi::Error::Success();
}

// The workspace arrives as a second output, sized at trace time by nms_sptc_prepare.
ffi::Error SpmmImpl(cudaStream_t stream, ffi::Buffer<ffi::U8> a, ffi::Buffer<ffi::BF16> x,
                    ffi::Result<ffi::Buffer<ffi::BF16>> y, ffi::Result<ffi::Buffer<ffi::U8>> ws,
                    int64_t m, int64_t k) {
  auto xd = x.dimensions();
  if (xd.size() != 2 || xd[1] != k)
    return ffi::Error::InvalidArgument("nms_sptc_spmm: X must be [n, k] with k=" +
                                       std::to_string(k));
  int64_t n = xd[0];
  std::lock_guard<std::mutex> lock(g_mu);
  int device = 0;
  Handle* h = nullptr;
  if (auto e = StreamHandle(stream, &device, &h); e.failure()) return e;
  Plan* p = nullptr;
  if (auto e = GetPlan(h, device, m, n, k, &p); e.failure()) return e;
  if (p->workspace > ws->size_bytes())
    return ffi::Error::Internal("nms_sptc_spmm: plan wants " + std::to_string(p->workspace) +
                                " workspace bytes, got " + std::to_string(ws->size_bytes()));
  float alpha = 1.0f, beta = 0.0f;
  cudaStream_t streams[1] = {stream};
  NMS_CSLT(cusparseLtMatmul(&h->h, &p->plan, &alpha, a.untyped_data(), x.untyped_data(), &beta,
                            y->untyped_data(), y->untyped_data(),
                            p->workspace ? ws->untyped_data() : nullptr, streams, 1));
  return ffi::Error::Success();
}

}  // namespace

// Host-side calls (ctypes, at trace time): prepare a plan (algorithm search) and report its
// workspace bytes and algorithm id; the compressed size of a structured [m, k] bf16 operand and
// the compressor's buffer bytes; the library version.
extern "C" int nms_sptc_prepare(int device, int64_t m, int64_t n, int64_t k, int64_t* workspace,
                                int* alg_id) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (cudaSetDevice(device) != cudaSuccess) return 1;
  Plan* p = nullptr;
  if (PreparePlan(device, m, n, k, &p).failure()) return 2;
  *workspace = static_cast<int64_t>(p->workspace);
  *alg_id = p->alg_id;
  return 0;
}

extern "C" int nms_sptc_compressed_size(int device, int64_t m, int64_t k, int64_t* size,
                                        int64_t* buffer) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (cudaSetDevice(device) != cudaSuccess) return 1;
  Handle* h = nullptr;
  if (GetHandle(device, &h).failure()) return 2;
  cusparseLtMatDescriptor_t desc;
  if (InitSparseDesc(h, &desc, m, k).failure()) return 3;
  size_t s = 0, b = 0;
  cusparseStatus_t st = cusparseLtSpMMACompressedSize2(&h->h, &desc, &s, &b);
  cusparseLtMatDescriptorDestroy(&desc);
  if (st != CUSPARSE_STATUS_SUCCESS) return 4;
  *size = static_cast<int64_t>(s);
  *buffer = static_cast<int64_t>(b);
  return 0;
}

extern "C" int nms_sptc_version() { return CUSPARSELT_VERSION; }


XLA_FFI_DEFINE_HANDLER_SYMBOL(nms_sptc_prune, PruneImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("n")
                                  .Attr<int64_t>("m")
                                  .Attr<bool>("bp"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(nms_sptc_lib_compress, LibCompressImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::U8>>()
                                  .Ret<ffi::Buffer<ffi::U8>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(nms_sptc_spmm, SpmmImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::U8>>()
                                  .Attr<int64_t>("m")
                                  .Attr<int64_t>("k"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(nms_sptc_compress, CompressImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::U8>>()
                                  .Ret<ffi::Buffer<ffi::U8>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("n")
                                  .Attr<int64_t>("m")
                                  .Attr<bool>("bp"));
