// The per-step products of the recurrent time loops: C (M x N) = A (M x K) · B (K x N), with M a slice
// of the batch (1 to ~64 rows) and K, N a few hundred.
//
// Why not BLAS (at::addmm) by default: at these sizes a library GEMM spends a large part of each call on
// dispatch and on packing B, and it packs B again at every step. Here B, the recurrent weights, is packed
// once per sequence into panels of NR columns stored k-major, and the micro-kernel keeps an MR x NR block
// of C in registers while it streams one panel (from L1/L2) and broadcasts MR rows of A. (lstm_fast.cpp
// adds BLAS through ATen as one more candidate, and the plan measures it like the others.)
//
// A family of such kernels, one per register blocking (Blocking<scalar_t, VB, MR, NV>: vectors of VB
// bytes, MR rows, NV vectors = NR columns per panel), because the best one depends on the CPU and the
// shape: with AVX2's 16 vector registers 6 x 2 ymm (12 accumulators) is the classic choice, while AVX-512
// has 32 registers twice as wide, and 64-byte vectors run at twice the FLOP rate on an Intel core with
// two 512-bit FMA units (measured on a Xeon with AVX-512: ~100 GFLOP/s per core with 6 x 2 ymm, ~150 with
// 8 x 2 zmm) but not on AMD Zen 4, which splits them. kernels<scalar_t>() lists the ones compiled for this
// ISA, the default first; kernel_plan.py times them per shape once per CPU and remembers the winner.
// Written with GCC/Clang vector extensions (no intrinsics): -march=native picks AVX2/AVX-512 FMA where the
// CPU has them, and other targets get correct, slower code.
//
// The functions outside Kernel (pack, gemm, gemm_packed, ... with the kPanel / kRows constants) are the
// default kernel of this build, for callers that need no choice.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

namespace small_gemm {

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;  // one zmm register
constexpr int kRows = 8;       // MR of the default kernel: 8 x 2 zmm accumulators of the 32 registers
#else
constexpr int kVecBytes = 32;  // one AVX2 register; the compiler splits it where registers are narrower
constexpr int kRows = 6;       // 6 x 2 ymm: 12 of the 16 registers hold accumulators
#endif

template <typename scalar_t, int VB = kVecBytes>
struct VecOf {
  typedef scalar_t type __attribute__((vector_size(VB)));
};
template <typename scalar_t, int VB = kVecBytes>
using Vec = typename VecOf<scalar_t, VB>::type;
template <typename scalar_t, int VB = kVecBytes>
constexpr int kLanes = VB / sizeof(scalar_t);
template <typename scalar_t>
constexpr int kPanel = 2 * kLanes<scalar_t>;  // NR of the default kernel: columns per packed panel

template <typename scalar_t, int VB = kVecBytes>
inline Vec<scalar_t, VB> vload(const scalar_t* p) {
  Vec<scalar_t, VB> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename scalar_t, int VB = kVecBytes>
inline void vstore(scalar_t* p, Vec<scalar_t, VB> v) {
  std::memcpy(p, &v, sizeof v);
}

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// ---- packing, for any panel width NR and row block MR ---------------------------------------------------

// B (K x N), element (k, n) at b[k * stride_k + n * stride_n], into panels of NR columns: panel p holds
// columns [p NR, p NR + NR) as K rows of NR contiguous values, zero past column N. NR = 1: B row-major.
template <typename scalar_t>
void pack_panels(int64_t NR, const scalar_t* b, int64_t K, int64_t N, int64_t stride_k, int64_t stride_n,
                 scalar_t* out) {
  for (int64_t p = 0; p < N; p += NR, out += K * NR) {
    const int64_t width = N - p < NR ? N - p : NR;
    if (width < NR) std::memset(out, 0, sizeof(scalar_t) * K * NR);
    if (stride_n == 1) {  // B's rows are contiguous (W for ∂L/∂h = δa W): one copy per k
      for (int64_t k = 0; k < K; ++k) std::memcpy(out + k * NR, b + k * stride_k + p, sizeof(scalar_t) * width);
      continue;
    }
    for (int64_t k = 0; k < K; ++k) {  // B = Wᵀ: the panel's rows of W read side by side, its k-rows written whole
      scalar_t* dst = out + k * NR;
      const scalar_t* src = b + p * stride_n + k * stride_k;
      for (int64_t c = 0; c < width; ++c) dst[c] = src[c * stride_n];
    }
  }
}

// Rows given one at a time (row(k): pointer to N values) packed as pack_panels() does: for an operand
// gathered from several places, such as one batch slice's rows over a chunk of time steps.
template <typename scalar_t, class RowOf>
void pack_panel_rows(int64_t NR, int64_t K, int64_t N, RowOf row, scalar_t* out) {
  for (int64_t k = 0; k < K; ++k) {
    const scalar_t* src = row(k);
    for (int64_t p = 0; p < N; p += NR) {
      scalar_t* dst = out + p * K + k * NR;  // panel p / NR starts at (p / NR) K NR = p K
      const int64_t width = N - p < NR ? N - p : NR;
      std::memcpy(dst, src + p, sizeof(scalar_t) * width);
      for (int64_t c = width; c < NR; ++c) dst[c] = scalar_t(0);
    }
  }
}

// A given as its K columns one at a time (column(k): pointer to M values), packed in blocks of MR rows
// stored k-major (MR contiguous values per k, zero past M): for Aᵀ = δa of a chunk of steps, whose rows
// are the columns of A in the weight gradients' δAᵀ X. MR = 1: A row-major.
template <typename scalar_t, class ColumnOf>
void pack_row_blocks(int64_t MR, int64_t M, int64_t K, ColumnOf column, scalar_t* out) {
  const int64_t blocks = (M + MR - 1) / MR;
  for (int64_t k = 0; k < K; ++k) {
    const scalar_t* src = column(k);
    for (int64_t j = 0; j < blocks; ++j) {
      scalar_t* dst = out + (j * K + k) * MR;
      for (int64_t r = 0; r < MR; ++r) dst[r] = j * MR + r < M ? src[j * MR + r] : scalar_t(0);
    }
  }
}

// ---- the micro-kernel -----------------------------------------------------------------------------------

// C[0:MR, 0:NV L] (+)= A[0:MR, 0:K] · panel, with A's element (r, k) at a[r * rs + k * ks]: rs = lda, ks = 1
// for A stored row-major; rs = 1, ks = MR for A packed by pack_row_blocks().
template <typename scalar_t, int VB, int MR, int NV>
inline void tile(const scalar_t* a, int64_t rs, int64_t ks, const scalar_t* panel, int64_t K, scalar_t* c,
                 int64_t ldc, bool accumulate) {
  using V = Vec<scalar_t, VB>;
  constexpr int L = kLanes<scalar_t, VB>;
  V acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = accumulate ? vload<scalar_t, VB>(c + r * ldc + v * L) : V{};
  for (int64_t k = 0; k < K; ++k, panel += NV * L, a += ks) {
    V b[NV];
    for (int v = 0; v < NV; ++v) b[v] = vload<scalar_t, VB>(panel + v * L);
    // keep the panel's vectors in registers: otherwise gcc folds them into every FMA as memory operands,
    // MR loads each per k, and blocks of 2 to 4 rows become load-bound (~40 GFLOP/s; ~95 with registers)
#if defined(__AVX512F__)  // "v": any of the 32 EVEX vector registers
    for (int v = 0; v < NV; ++v) asm("" : "+v"(b[v]));
#elif defined(__AVX__)  // "x": an x86 vector register, which holds a whole ymm only with AVX
    if constexpr (VB <= 32)
      for (int v = 0; v < NV; ++v) asm("" : "+x"(b[v]));
#endif
    for (int r = 0; r < MR; ++r) {
      const V ar = a[r * rs] + V{};  // broadcast
      for (int v = 0; v < NV; ++v) acc[r][v] += ar * b[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) vstore<scalar_t, VB>(c + r * ldc + v * L, acc[r][v]);
}

// One register blocking: MR rows x NV vectors of VB bytes.
template <typename scalar_t, int VB, int MR, int NV>
struct Blocking {
  static constexpr int kRowsPerTile = MR, kCols = NV * kLanes<scalar_t, VB>;

  // a tile of `rows` <= MR rows (the last block of a matrix has fewer)
  template <int R = MR>
  static void rows(int rows, const scalar_t* a, int64_t rs, int64_t ks, const scalar_t* panel, int64_t K,
                   scalar_t* c, int64_t ldc, bool accumulate) {
    if constexpr (R >= 1) {
      if (rows == R) return tile<scalar_t, VB, R, NV>(a, rs, ks, panel, K, c, ldc, accumulate);
      return Blocking::rows<R - 1>(rows, a, rs, ks, panel, K, c, ldc, accumulate);
    }
  }

  // C (M x padded(N)) (+)= A (M x K) · B, A row-major, B packed in panels of kCols; ldc >= padded(N).
  // Panel by panel: the panel stays in L1 while every row block of A (also cache-resident) passes. The
  // rows are cut into near-equal blocks of at most MR (16 = 8 + 8, not 12 + 4: a small block streams a
  // whole panel for little work).
  static void gemm(int64_t M, int64_t N, int64_t K, const scalar_t* a, int64_t lda, const scalar_t* packed,
                   scalar_t* c, int64_t ldc, bool accumulate) {
    const int64_t blocks = (M + MR - 1) / MR;
    for (int64_t p = 0; p < N; p += kCols, packed += K * kCols)
      for (int64_t j = 0; j < blocks; ++j) {
        const int64_t r0 = j * M / blocks, r1 = (j + 1) * M / blocks;
        rows(int(r1 - r0), a + r0 * lda, lda, 1, packed, K, c + r0 * ldc + p, ldc, accumulate);
      }
  }

  // C (M x padded(N)) (+)= A · B with A packed by pack_row_blocks(MR) and B in panels of kCols.
  static void gemm_packed(int64_t M, int64_t N, int64_t K, const scalar_t* a_packed, const scalar_t* b_packed,
                          scalar_t* c, int64_t ldc, bool accumulate) {
    for (int64_t p = 0; p < N; p += kCols, b_packed += K * kCols)
      for (int64_t r = 0; r < M; r += MR)
        rows(int(M - r < MR ? M - r : MR), a_packed + r * K, 1, MR, b_packed, K, c + r * ldc + p, ldc,
             accumulate);
  }
};

// ---- a kernel chosen at run time ------------------------------------------------------------------------

// One configuration as the loops use it: how its operands are packed, and its two products. `rows` (MR)
// and `cols` (NR) fix the packed layouts; a configuration with rows = cols = 1 takes plain row-major
// operands (lstm_fast.cpp's BLAS candidate).
template <typename scalar_t>
struct Kernel {
  using Gemm = void (*)(int64_t M, int64_t N, int64_t K, const scalar_t* a, int64_t lda, const scalar_t* packed,
                        scalar_t* c, int64_t ldc, bool accumulate);
  using GemmPacked = void (*)(int64_t M, int64_t N, int64_t K, const scalar_t* a_packed,
                              const scalar_t* b_packed, scalar_t* c, int64_t ldc, bool accumulate);
  const char* name;
  int64_t rows, cols;
  Gemm gemm_fn;
  GemmPacked gemm_packed_fn;

  int64_t padded(int64_t N) const { return round_up(N, cols); }  // columns of every C it writes
  int64_t packed_size(int64_t K, int64_t N) const { return padded(N) * K; }
  int64_t packed_columns_size(int64_t M, int64_t K) const { return round_up(M, rows) * K; }
  void pack(const scalar_t* b, int64_t K, int64_t N, int64_t stride_k, int64_t stride_n, scalar_t* out) const {
    pack_panels(cols, b, K, N, stride_k, stride_n, out);
  }
  template <class RowOf>
  void pack_rows(int64_t K, int64_t N, RowOf row, scalar_t* out) const {
    pack_panel_rows(cols, K, N, row, out);
  }
  template <class ColumnOf>
  void pack_columns(int64_t M, int64_t K, ColumnOf column, scalar_t* out) const {
    pack_row_blocks(rows, M, K, column, out);
  }
  // C (M x padded(N)) (+)= A (M x K) · B, A row-major, B packed by pack(); ldc >= padded(N)
  void gemm(int64_t M, int64_t N, int64_t K, const scalar_t* a, int64_t lda, const scalar_t* packed,
            scalar_t* c, int64_t ldc, bool accumulate) const {
    gemm_fn(M, N, K, a, lda, packed, c, ldc, accumulate);
  }
  // C (M x padded(N)) (+)= A · B, A packed by pack_columns(), B by pack() or pack_rows()
  void gemm_packed(int64_t M, int64_t N, int64_t K, const scalar_t* a_packed, const scalar_t* b_packed,
                   scalar_t* c, int64_t ldc, bool accumulate) const {
    gemm_packed_fn(M, N, K, a_packed, b_packed, c, ldc, accumulate);
  }
};

template <typename scalar_t, int VB, int MR, int NV>
Kernel<scalar_t> kernel(const char* name) {
  using K = Blocking<scalar_t, VB, MR, NV>;
  return {name, MR, K::kCols, &K::gemm, &K::gemm_packed};
}

// The kernels compiled for this ISA, the default first. float gets the candidates; double (the tests'
// gradchecks) the default only, which keeps the build short.
template <typename scalar_t>
inline const std::vector<Kernel<scalar_t>>& kernels() {
  static const std::vector<Kernel<scalar_t>> list = [] {
    std::vector<Kernel<scalar_t>> k;
#if defined(__AVX512F__)
    k.push_back(kernel<scalar_t, 64, 8, 2>("zmm 8x2"));
    if constexpr (sizeof(scalar_t) == 4) {
      k.push_back(kernel<scalar_t, 64, 12, 2>("zmm 12x2"));
      k.push_back(kernel<scalar_t, 64, 8, 3>("zmm 8x3"));
      k.push_back(kernel<scalar_t, 64, 6, 4>("zmm 6x4"));
      k.push_back(kernel<scalar_t, 64, 4, 4>("zmm 4x4"));
      k.push_back(kernel<scalar_t, 32, 6, 2>("ymm 6x2"));
    }
#else
    k.push_back(kernel<scalar_t, 32, 6, 2>("ymm 6x2"));
    if constexpr (sizeof(scalar_t) == 4) k.push_back(kernel<scalar_t, 32, 4, 3>("ymm 4x3"));
#endif
    return k;
  }();
  return list;
}

// ---- the default kernel of this build, as plain functions -----------------------------------------------

template <typename scalar_t>
using Default = Blocking<scalar_t, kVecBytes, kRows, 2>;

// Columns of C (and of every buffer the GEMM writes): N rounded up to whole panels.
template <typename scalar_t>
inline int64_t padded(int64_t N) {
  return round_up(N, kPanel<scalar_t>);
}

// Size of pack()'s output, in elements.
template <typename scalar_t>
inline int64_t packed_size(int64_t K, int64_t N) {
  return padded<scalar_t>(N) * K;
}

template <typename scalar_t>
void pack(const scalar_t* b, int64_t K, int64_t N, int64_t stride_k, int64_t stride_n, scalar_t* out) {
  pack_panels<scalar_t>(kPanel<scalar_t>, b, K, N, stride_k, stride_n, out);
}

// C[0:MR, 0:NR] (+)= A[0:MR, 0:K] · panel (the default kernel's tile)
template <typename scalar_t, int MR>
inline void micro_kernel(const scalar_t* a, int64_t rs, int64_t ks, const scalar_t* panel, int64_t K,
                         scalar_t* c, int64_t ldc, bool accumulate) {
  tile<scalar_t, kVecBytes, MR, 2>(a, rs, ks, panel, K, c, ldc, accumulate);
}

template <typename scalar_t>
inline void micro_kernel_rows(int rows, const scalar_t* a, int64_t rs, int64_t ks, const scalar_t* panel,
                              int64_t K, scalar_t* c, int64_t ldc, bool accumulate) {
  Default<scalar_t>::rows(rows, a, rs, ks, panel, K, c, ldc, accumulate);
}

// Rows per micro-kernel call for the next block of the M - r left: kRows while more than kRows + 2 remain,
// then the rest in one block or two near-equal ones.
inline int row_block(int64_t left) {
  return int(left > kRows + 2 ? kRows : left > kRows ? (left + 1) / 2 : left);
}

// C (M x padded(N)) = A (M x K) · B, or += when accumulate; A row-major, B packed by pack(); ldc >=
// padded(N).
template <typename scalar_t>
void gemm(int64_t M, int64_t N, int64_t K, const scalar_t* a, int64_t lda, const scalar_t* packed,
          scalar_t* c, int64_t ldc, bool accumulate) {
  Default<scalar_t>::gemm(M, N, K, a, lda, packed, c, ldc, accumulate);
}

template <typename scalar_t, class ColumnOf>
void pack_columns(int64_t M, int64_t K, ColumnOf column, scalar_t* out) {
  pack_row_blocks<scalar_t>(kRows, M, K, column, out);
}

template <typename scalar_t>
inline int64_t packed_columns_size(int64_t M, int64_t K) {
  return round_up(M, kRows) * K;
}

// C (M x padded(N)) (+)= A · B with A packed by pack_columns() and B by pack()/pack_rows().
template <typename scalar_t>
void gemm_packed(int64_t M, int64_t N, int64_t K, const scalar_t* a_packed, const scalar_t* b_packed,
                 scalar_t* c, int64_t ldc, bool accumulate) {
  Default<scalar_t>::gemm_packed(M, N, K, a_packed, b_packed, c, ldc, accumulate);
}

template <typename scalar_t, class RowOf>
void pack_rows(int64_t K, int64_t N, RowOf row, scalar_t* out) {
  pack_panel_rows<scalar_t>(kPanel<scalar_t>, K, N, row, out);
}

// C (M x N) (+)= A (M x K) · Wᵀ with W (N x K) row-major and not packed: for one step (decoding), where
// packing the weights would cost more than the product. Four dot products at a time along k.
template <typename scalar_t>
void gemm_unpacked(int64_t M, int64_t N, int64_t K, const scalar_t* a, int64_t lda, const scalar_t* w,
                   int64_t ldw, scalar_t* c, int64_t ldc, bool accumulate) {
  constexpr int L = kLanes<scalar_t>;
  const int64_t kv = K / L * L;
  for (int64_t r = 0; r < M; ++r) {
    const scalar_t* ar = a + r * lda;
    scalar_t* cr = c + r * ldc;
    int64_t n = 0;
    for (; n + 4 <= N; n += 4) {
      const scalar_t* w0 = w + n * ldw;
      Vec<scalar_t> s0{}, s1{}, s2{}, s3{};
      for (int64_t k = 0; k < kv; k += L) {
        const Vec<scalar_t> av = vload(ar + k);
        s0 += av * vload(w0 + k);
        s1 += av * vload(w0 + ldw + k);
        s2 += av * vload(w0 + 2 * ldw + k);
        s3 += av * vload(w0 + 3 * ldw + k);
      }
      scalar_t out[4] = {0, 0, 0, 0};
      for (int l = 0; l < L; ++l) {
        out[0] += s0[l];
        out[1] += s1[l];
        out[2] += s2[l];
        out[3] += s3[l];
      }
      for (int64_t k = kv; k < K; ++k)
        for (int q = 0; q < 4; ++q) out[q] += ar[k] * w0[q * ldw + k];
      for (int q = 0; q < 4; ++q) cr[n + q] = accumulate ? cr[n + q] + out[q] : out[q];
    }
    for (; n < N; ++n) {
      scalar_t s = 0;
      for (int64_t k = 0; k < K; ++k) s += ar[k] * w[n * ldw + k];
      cr[n] = accumulate ? cr[n] + s : s;
    }
  }
}

}  // namespace small_gemm
