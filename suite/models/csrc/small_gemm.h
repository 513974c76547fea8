// The per-step products of the recurrent time loops: C (M x N) = A (M x K) · B (K x N), with M a slice
// of the batch (1 to ~32 rows) and K, N a few hundred.
//
// Why not BLAS (at::addmm): at these sizes a library GEMM spends a large part of each call on dispatch
// and on packing B, and it packs B again at every step. Here B, the recurrent weights, is packed once
// per sequence into panels of NR columns stored k-major, and the micro-kernel keeps an MR x NR block of
// C in registers while it streams one panel (from L1/L2) and broadcasts MR rows of A: with AVX2 and
// MR = 6, NR = 2 vectors, 12 of the 16 vector registers hold accumulators. Written with GCC/Clang
// vector extensions (no intrinsics): -march=native picks AVX2/AVX-512 FMA where the CPU has them, and
// other targets get correct, slower code.
#pragma once

#include <cstdint>
#include <cstring>

namespace small_gemm {

constexpr int kVecBytes = 32;  // one AVX2 register; the compiler splits it where registers are narrower
template <typename scalar_t>
struct VecOf {
  typedef scalar_t type __attribute__((vector_size(kVecBytes)));
};
template <typename scalar_t>
using Vec = typename VecOf<scalar_t>::type;
template <typename scalar_t>
constexpr int kLanes = kVecBytes / sizeof(scalar_t);
template <typename scalar_t>
constexpr int kPanel = 2 * kLanes<scalar_t>;  // NR: columns per packed panel
constexpr int kRows = 6;                      // MR: rows per micro-kernel call

template <typename scalar_t>
inline Vec<scalar_t> vload(const scalar_t* p) {
  Vec<scalar_t> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename scalar_t>
inline void vstore(scalar_t* p, Vec<scalar_t> v) {
  std::memcpy(p, &v, sizeof v);
}

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

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

// B (K x N), element (k, n) at b[k * stride_k + n * stride_n], into panels of NR columns: panel p holds
// columns [p NR, p NR + NR) as K rows of NR contiguous values, zero past column N.
template <typename scalar_t>
void pack(const scalar_t* b, int64_t K, int64_t N, int64_t stride_k, int64_t stride_n, scalar_t* out) {
  constexpr int NR = kPanel<scalar_t>;
  for (int64_t p = 0; p < N; p += NR, out += K * NR) {
    const int width = N - p < NR ? int(N - p) : NR;
    if (width < NR) std::memset(out, 0, sizeof(scalar_t) * K * NR);
    for (int c = 0; c < width; ++c) {  // one column at a time: B is usually a weight read along its rows
      const scalar_t* col = b + (p + c) * stride_n;
      for (int64_t k = 0; k < K; ++k) out[k * NR + c] = col[k * stride_k];
    }
  }
}

// C[0:MR, 0:NR] (+)= A[0:MR, 0:K] · panel, with A's element (r, k) at a[r * rs + k * ks]: rs = lda, ks = 1
// for A stored row-major; rs = 1, ks = MR for A packed by pack_columns().
template <typename scalar_t, int MR>
inline void micro_kernel(const scalar_t* a, int64_t rs, int64_t ks, const scalar_t* panel, int64_t K,
                         scalar_t* c, int64_t ldc, bool accumulate) {
  constexpr int L = kLanes<scalar_t>;
  Vec<scalar_t> acc[MR][2];
  for (int r = 0; r < MR; ++r) {
    acc[r][0] = accumulate ? vload(c + r * ldc) : Vec<scalar_t>{};
    acc[r][1] = accumulate ? vload(c + r * ldc + L) : Vec<scalar_t>{};
  }
  for (int64_t k = 0; k < K; ++k, panel += 2 * L, a += ks) {
    Vec<scalar_t> b0 = vload(panel), b1 = vload(panel + L);
    // keep b0, b1 in registers: otherwise gcc folds them into every FMA as memory operands, MR loads each
    // per k, and blocks of 2 to 4 rows become load-bound (~40 GFLOP/s here; ~95 with the registers)
#if defined(__AVX__)  // "x": an x86 vector register, which holds a whole Vec only with AVX
    asm("" : "+x"(b0), "+x"(b1));
#endif
    for (int r = 0; r < MR; ++r) {
      const Vec<scalar_t> ar = a[r * rs] + Vec<scalar_t>{};  // broadcast
      acc[r][0] += ar * b0;
      acc[r][1] += ar * b1;
    }
  }
  for (int r = 0; r < MR; ++r) {
    vstore(c + r * ldc, acc[r][0]);
    vstore(c + r * ldc + L, acc[r][1]);
  }
}

template <typename scalar_t>
inline void micro_kernel_rows(int rows, const scalar_t* a, int64_t rs, int64_t ks, const scalar_t* panel,
                              int64_t K, scalar_t* c, int64_t ldc, bool accumulate) {
  switch (rows) {
    case 6: return micro_kernel<scalar_t, 6>(a, rs, ks, panel, K, c, ldc, accumulate);
    case 5: return micro_kernel<scalar_t, 5>(a, rs, ks, panel, K, c, ldc, accumulate);
    case 4: return micro_kernel<scalar_t, 4>(a, rs, ks, panel, K, c, ldc, accumulate);
    case 3: return micro_kernel<scalar_t, 3>(a, rs, ks, panel, K, c, ldc, accumulate);
    case 2: return micro_kernel<scalar_t, 2>(a, rs, ks, panel, K, c, ldc, accumulate);
    case 1: return micro_kernel<scalar_t, 1>(a, rs, ks, panel, K, c, ldc, accumulate);
    default: return;
  }
}

// Rows per micro-kernel call for the next block of the M - r left: 6 while more than 8 remain, then the
// rest in one block or two near-equal ones (8 = 4 + 4: a block of 2 would stream a whole panel for little
// work).
inline int row_block(int64_t left) { return int(left > 8 ? kRows : left > kRows ? (left + 1) / 2 : left); }

// C (M x padded(N)) = A (M x K) · B, or += when accumulate; A row-major, B packed by pack(); ldc >=
// padded(N). Panel by panel: the panel stays in L1 while every row block of A (M x K, also cache-resident)
// passes.
template <typename scalar_t>
void gemm(int64_t M, int64_t N, int64_t K, const scalar_t* a, int64_t lda, const scalar_t* packed,
          scalar_t* c, int64_t ldc, bool accumulate) {
  constexpr int NR = kPanel<scalar_t>;
  for (int64_t p = 0; p < N; p += NR, packed += K * NR)
    for (int64_t r = 0, rows; r < M; r += rows) {
      rows = row_block(M - r);
      micro_kernel_rows<scalar_t>(int(rows), a + r * lda, lda, 1, packed, K, c + r * ldc + p, ldc,
                                  accumulate);
    }
}

// A given as its K columns one at a time (column(k): pointer to M values), packed in blocks of MR rows
// stored k-major (MR contiguous values per k, zero past M): for Aᵀ = δa of a chunk of steps, whose rows
// are the columns of A in the weight gradients' δAᵀ X.
template <typename scalar_t, class ColumnOf>
void pack_columns(int64_t M, int64_t K, ColumnOf column, scalar_t* out) {
  const int64_t blocks = (M + kRows - 1) / kRows;
  for (int64_t k = 0; k < K; ++k) {
    const scalar_t* src = column(k);
    for (int64_t j = 0; j < blocks; ++j) {
      scalar_t* dst = out + (j * K + k) * kRows;
      for (int r = 0; r < kRows; ++r) dst[r] = j * kRows + r < M ? src[j * kRows + r] : scalar_t(0);
    }
  }
}

template <typename scalar_t>
inline int64_t packed_columns_size(int64_t M, int64_t K) {
  return round_up(M, kRows) * K;
}

// C (M x padded(N)) (+)= A · B with A packed by pack_columns() and B by pack()/pack_rows().
template <typename scalar_t>
void gemm_packed(int64_t M, int64_t N, int64_t K, const scalar_t* a_packed, const scalar_t* b_packed,
                 scalar_t* c, int64_t ldc, bool accumulate) {
  constexpr int NR = kPanel<scalar_t>;
  for (int64_t p = 0; p < N; p += NR, b_packed += K * NR)
    for (int64_t r = 0; r < M; r += kRows)
      micro_kernel_rows<scalar_t>(int(M - r < kRows ? M - r : kRows), a_packed + r * K, 1, kRows, b_packed, K,
                                  c + r * ldc + p, ldc, accumulate);
}

// Rows given one at a time (row(k): pointer to N values) packed as pack() does: for an operand gathered
// from several places, such as one batch slice's rows over a chunk of time steps.
template <typename scalar_t, class RowOf>
void pack_rows(int64_t K, int64_t N, RowOf row, scalar_t* out) {
  constexpr int NR = kPanel<scalar_t>;
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
