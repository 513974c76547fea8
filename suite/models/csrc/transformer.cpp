// The small Transformer's CPU kernels, each a forward and a hand-derived backward that transformer_fast.py
// wraps in an autograd.Function; the library op computing the same function is each one's oracle in the
// tests: softmax attention for small heads (F.scaled_dot_product_attention), LayerNorm over the last
// dimension (F.layer_norm) and the MLP Linear -> GELU (exact form) -> Linear (nn.Sequential of those).
//
// ---- attention ------------------------------------------------------------------------------------------
//
// Why: at the suite's sizes (d_model 28-64, 2-4 heads, so d_head 7-16) SDPA's CPU flash kernel blocks
// over d_head and spends its time on tiny GEMMs with K = d_head; the math form (bmm + softmax) pays the
// same, plus the (T x S) tensors it builds op by op. Here no product has d_head as its long axis. Every
// loop runs on vectors of L queries (or L keys) side by side, one per lane, and d_head is a short,
// unrolled loop of broadcast FMAs, so no horizontal sum is ever taken:
//
//   forward, a block of L queries i:   s_j = Σ_d q_d k_jd / √d  (+ ALiBi's −m·|i − j|; j ≤ i + offset
//                                      when causal), p = softmax_j(s), out_d = Σ_j p_j v_jd,
//                                      lse = log Σ_j e^(s_j) (kept for the backward, as flash attention)
//   backward (p recomputed from lse, δ_i = Σ_d dout_id out_id, dp_ij = Σ_d dout_id v_jd,
//             ds_ij = p_ij (dp_ij − δ_i)):
//     a block of L queries i:          dq_id = Σ_j ds_ij k_jd / √d
//     a block of L keys j:             dk_jd = Σ_i ds_ij q_id / √d,   dv_jd = Σ_i p_ij dout_id
//
// Queries are the last T of the S key positions (offset = S − T: decoding with a cache). Parallel over
// (batch row, head), each independent. Layout: q (B, T, H, D), k and v (B, S, H, D) with any strides (views
// of the fused QKV projection: no copy); out (B, T, H, D) contiguous; lse (B, H, T).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/csrc/utils/pybind.h>

#if defined(__AVX512F__)
#include <immintrin.h>  // _mm512_rcp14_ps
#endif

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "small_gemm.h"
#include "vec_math.h"

namespace {

// One AVX-512 / AVX2 register of floats; one double (the tests' gradchecks) as a vector of one lane.
template <typename scalar_t>
constexpr int kVB = std::is_same_v<scalar_t, float> ? small_gemm::kVecBytes : int(sizeof(scalar_t));
template <typename scalar_t>
using V = small_gemm::Vec<scalar_t, kVB<scalar_t>>;
template <typename scalar_t>
constexpr int kL = kVB<scalar_t> / int(sizeof(scalar_t));
template <typename scalar_t>
inline V<scalar_t> splat(scalar_t x) {
  return V<scalar_t>{} + x;
}

// e^x. float: vec_math.h's (relative error ~1e-6, x clamped to about [-87, 87]). double: the library, lane
// by lane.
inline V<float> vexp(V<float> x) { return vec_math::exp_(x); }
inline V<double> vexp(V<double> x) {
  for (int l = 0; l < kL<double>; ++l) x[l] = std::exp(x[l]);
  return x;
}

template <typename scalar_t>
inline V<scalar_t> lane_index() {
  V<scalar_t> v;
  for (int l = 0; l < kL<scalar_t>; ++l) v[l] = scalar_t(l);
  return v;
}

constexpr float kMasked = -1e30f;  // a finite "minus infinity": -ffast-math assumes there are none

// One (batch row, head) of a (B, positions, H, D) tensor with any strides (View): its rows read in place
// (point) where d is contiguous, and/or gathered once into arrays of its own (gather), row-major (positions,
// D) for broadcasts along d and transposed (D, positions) for vectors of positions: q pre-scaled by 1/√d,
// and (backward) dout, out. Positions past T or S stay zero in the transposed copy: they fill the last
// vector's spare lanes. Only what a kernel reads is copied: the first version copied every tensor both ways,
// a fifth of the forward's time.
template <typename scalar_t>
struct View {
  scalar_t* data;
  int64_t s0, s1, s2, s3;
  View(const at::Tensor& x) : data(x.data_ptr<scalar_t>()), s0(x.stride(0)), s1(x.stride(1)), s2(x.stride(2)),
                              s3(x.stride(3)) {}
  scalar_t& at(int64_t b, int64_t i, int64_t h, int64_t d) const { return data[b * s0 + i * s1 + h * s2 + d * s3]; }
};

template <typename scalar_t>
struct Rows {
  int64_t n, np, D;
  std::vector<scalar_t> a, t;
  const scalar_t* base = nullptr;  // row i at base + i * stride: the copy's, or the tensor's own
  int64_t stride = 0;
  Rows(int64_t n_, int64_t D_)
      : n(n_), np(small_gemm::round_up(n_, kL<scalar_t>)), D(D_), a(np * D_), t(np * D_) {}
  void gather(const View<scalar_t>& x, int64_t b, int64_t h, scalar_t scale, bool rows, bool columns) {
    for (int64_t i = 0; i < n; ++i) {
      const scalar_t* src = &x.at(b, i, h, 0);
      if (rows)
        for (int64_t d = 0; d < D; ++d) a[i * D + d] = src[d * x.s3] * scale;
      if (columns)
        for (int64_t d = 0; d < D; ++d) t[d * np + i] = src[d * x.s3] * scale;
    }
    if (rows) base = a.data(), stride = D;
  }
  void point(const View<scalar_t>& x, int64_t b, int64_t h) {  // rows in place
    if (x.s3 != 1) return gather(x, b, h, 1, true, false);
    base = &x.at(b, 0, h, 0), stride = x.s1;
  }
  const scalar_t* row(int64_t i) const { return base + i * stride; }
  // column d of positions [i0, i0 + L) as one vector (its lanes are L positions)
  V<scalar_t> column(int64_t i0, int64_t d) const {
    return small_gemm::vload<scalar_t, kVB<scalar_t>>(&t[d * np + i0]);
  }
};

// log x for x ≥ 1 (a softmax denominator whose largest term is e^0), on whole vectors: vec_math.h's. It
// replaced one libm call per query, a seventh of the forward at d_head 7. double (the tests): the library,
// per lane.
inline V<float> vlog(V<float> x) { return vec_math::log_(x); }
inline V<double> vlog(V<double> x) {
  V<double> r;
  for (int l = 0; l < kL<double>; ++l) r[l] = std::log(x[l]);
  return r;
}

// What the kernels share: the head's sizes, its causal limit and ALiBi slope.
template <typename scalar_t>
struct Geometry {
  int64_t T, S, offset;
  bool causal;
  scalar_t slope;  // 0 without ALiBi
  // keys a block of queries [i0, i0 + L) reads: up to the last query's causal limit
  int64_t keys_for(int64_t i0) const { return causal ? std::min(S, i0 + kL<scalar_t> + offset) : S; }
};

// Scores of L queries (lanes, positions pos) against key j, masked where j is beyond a lane's causal limit.
template <typename scalar_t, int D>
inline V<scalar_t> scores_vs_key(const V<scalar_t>* qT, const scalar_t* kj, int64_t j, V<scalar_t> pos,
                                 const Geometry<scalar_t>& g) {
  V<scalar_t> s = qT[0] * kj[0];
  for (int d = 1; d < D; ++d) s += qT[d] * kj[d];
  const V<scalar_t> jj = splat(scalar_t(j));
  if (g.slope != 0) {
    const V<scalar_t> dist = pos - jj;
    s -= g.slope * (dist < 0 ? -dist : dist);
  }
  if (g.causal) s = jj > pos ? splat(scalar_t(kMasked)) : s;
  return s;
}

template <typename scalar_t, int D>
void forward_head(const Rows<scalar_t>& q, const Rows<scalar_t>& k, const Rows<scalar_t>& v,
                  const Geometry<scalar_t>& g, std::vector<scalar_t>& sbuf, scalar_t* out, int64_t out_stride,
                  scalar_t* lse) {
  using Vs = V<scalar_t>;
  constexpr int L = kL<scalar_t>;
  for (int64_t i0 = 0; i0 < g.T; i0 += L) {
    Vs qT[D], acc[D];
    for (int d = 0; d < D; ++d) qT[d] = q.column(i0, d), acc[d] = Vs{};
    const Vs pos = lane_index<scalar_t>() + scalar_t(i0 + g.offset);
    const int64_t n = g.keys_for(i0);
    Vs m = splat(scalar_t(kMasked));
    for (int64_t j = 0; j < n; ++j) {
      const Vs s = scores_vs_key<scalar_t, D>(qT, k.row(j), j, pos, g);
      small_gemm::vstore<scalar_t, kVB<scalar_t>>(&sbuf[j * L], s);
      m = s > m ? s : m;
    }
    Vs sum{};
    for (int64_t j = 0; j < n; ++j) {
      Vs s = small_gemm::vload<scalar_t, kVB<scalar_t>>(&sbuf[j * L]);
      const Vs p = s > scalar_t(kMasked / 2) ? vexp(s - m) : Vs{};
      sum += p;
      const scalar_t* vj = v.row(j);
      for (int d = 0; d < D; ++d) acc[d] += p * vj[d];
    }
    const Vs inv = scalar_t(1) / sum, log_sum = m + vlog(sum);
    for (int l = 0; l < L && i0 + l < g.T; ++l) {
      for (int d = 0; d < D; ++d) out[(i0 + l) * out_stride + d] = acc[d][l] * inv[l];
      lse[i0 + l] = log_sum[l];
    }
  }
}

// A tile of L vectors of L lanes transposed in registers: the off-diagonal blocks of size S swapped, then
// each block transposed the same way at S / 2 (log2 L stages of L shuffles).
template <int S, int L, class Vs, size_t... I>
inline void swap_blocks(Vs& a, Vs& b, std::index_sequence<I...>) {
  const Vs top = __builtin_shufflevector(a, b, ((I & S) ? int(I) - S + L : int(I))...);
  const Vs bottom = __builtin_shufflevector(a, b, ((I & S) ? int(I) + L : int(I) + S)...);
  a = top, b = bottom;
}
template <class Vs, int L, int S = L / 2>
inline void transpose(Vs* t) {
  if constexpr (S >= 1) {
    for (int r = 0; r < L; ++r)
      if (!(r & S)) swap_blocks<S, L>(t[r], t[r + S], std::make_index_sequence<L>{});
    transpose<Vs, L, S / 2>(t);
  }
}

// One head's backward in one pass over blocks of L queries, key by key: p and ds as vectors over the
// queries give dq directly; every L keys their L x L tiles are transposed in registers, and the rows, now
// vectors over keys, give dk and dv (dkT, dvT: D rows of Sp, accumulated). Each p is computed once.
template <typename scalar_t, int D>
void backward_head(const Rows<scalar_t>& q, const Rows<scalar_t>& k, const Rows<scalar_t>& v,
                   const Rows<scalar_t>& dout, const Rows<scalar_t>& out, const scalar_t* lse,
                   const Geometry<scalar_t>& g, scalar_t scale, scalar_t* dq, scalar_t* dkT, scalar_t* dvT,
                   int64_t Sp) {
  using Vs = V<scalar_t>;
  constexpr int L = kL<scalar_t>;
  for (int64_t i0 = 0; i0 < g.T; i0 += L) {
    Vs qT[D], gT[D], dqT[D], dl{}, ls;  // δ_i = Σ_d dout_id out_id
    for (int d = 0; d < D; ++d) {
      qT[d] = q.column(i0, d), gT[d] = dout.column(i0, d), dqT[d] = Vs{};
      dl += gT[d] * out.column(i0, d);
    }
    for (int l = 0; l < L; ++l) ls[l] = i0 + l < g.T ? lse[i0 + l] : scalar_t(0);
    const Vs pos = lane_index<scalar_t>() + scalar_t(i0 + g.offset);
    const int64_t n = g.keys_for(i0), queries = std::min<int64_t>(L, g.T - i0);
    for (int64_t j0 = 0; j0 < n; j0 += L) {
      Vs P[L], DS[L];
      for (int jj = 0; jj < L; ++jj) {
        const int64_t j = j0 + jj;
        if (j >= n) {
          P[jj] = DS[jj] = Vs{};
          continue;
        }
        const scalar_t *kj = k.row(j), *vj = v.row(j);
        const Vs s = scores_vs_key<scalar_t, D>(qT, kj, j, pos, g);
        const Vs p = s > scalar_t(kMasked / 2) ? vexp(s - ls) : Vs{};
        Vs dp = gT[0] * vj[0];
        for (int d = 1; d < D; ++d) dp += gT[d] * vj[d];
        const Vs ds = p * (dp - dl);
        for (int d = 0; d < D; ++d) dqT[d] += ds * kj[d];
        P[jj] = p, DS[jj] = ds;
      }
      transpose<Vs, L>(P), transpose<Vs, L>(DS);  // P[l]: query i0 + l against keys j0 .. j0 + L
      Vs dkv[D], dvv[D];
      for (int d = 0; d < D; ++d) {
        dkv[d] = small_gemm::vload<scalar_t, kVB<scalar_t>>(dkT + d * Sp + j0);
        dvv[d] = small_gemm::vload<scalar_t, kVB<scalar_t>>(dvT + d * Sp + j0);
      }
      for (int l = 0; l < queries; ++l) {
        const scalar_t *qi = q.row(i0 + l), *gi = dout.row(i0 + l);  // q pre-scaled: dk = Σ ds q / √d
        for (int d = 0; d < D; ++d) dkv[d] += DS[l] * qi[d], dvv[d] += P[l] * gi[d];
      }
      for (int d = 0; d < D; ++d) {
        small_gemm::vstore<scalar_t, kVB<scalar_t>>(dkT + d * Sp + j0, dkv[d]);
        small_gemm::vstore<scalar_t, kVB<scalar_t>>(dvT + d * Sp + j0, dvv[d]);
      }
    }
    for (int l = 0; l < queries; ++l)
      for (int d = 0; d < D; ++d) dq[(i0 + l) * D + d] = dqT[d][l] * scale;
  }
}

// Scatter a head's (positions, D) rows into x[b, :, h, :].
template <typename scalar_t>
void scatter(const scalar_t* rows, int64_t n, int64_t D, const View<scalar_t>& x, int64_t b, int64_t h) {
  for (int64_t i = 0; i < n; ++i) {
    scalar_t* dst = &x.at(b, i, h, 0);
    for (int64_t d = 0; d < D; ++d) dst[d * x.s3] = rows[i * D + d];
  }
}

template <typename scalar_t>
Geometry<scalar_t> geometry(const at::Tensor& q, const at::Tensor& k, bool causal, const scalar_t* slopes,
                            int64_t h) {
  return {q.size(1), k.size(1), k.size(1) - q.size(1), causal, slopes ? slopes[h] : scalar_t(0)};
}

template <typename scalar_t, int D>
void forward_kernel(const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_, const at::Tensor& slopes_,
                    bool causal, at::Tensor& out_, at::Tensor& lse_) {
  const int64_t B = q_.size(0), T = q_.size(1), H = q_.size(2), S = k_.size(1);
  const scalar_t scale = scalar_t(1.0 / std::sqrt(double(D)));
  const View<scalar_t> q(q_), k(k_), v(v_), out(out_);
  scalar_t* lse = lse_.data_ptr<scalar_t>();
  const scalar_t* slopes = slopes_.defined() ? slopes_.data_ptr<scalar_t>() : nullptr;
  TORCH_CHECK(out.s3 == 1, "attention: out must be contiguous in d_head");
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    Rows<scalar_t> qr(T, D), kr(S, D), vr(S, D);
    std::vector<scalar_t> sbuf(S * kL<scalar_t>);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      qr.gather(q, b, h, scale, false, true), kr.point(k, b, h), vr.point(v, b, h);
      forward_head<scalar_t, D>(qr, kr, vr, geometry(q_, k_, causal, slopes, h), sbuf, &out.at(b, 0, h, 0), out.s1,
                                lse + bh * T);
    }
  });
}

template <typename scalar_t, int D>
void backward_kernel(const at::Tensor& dout_, const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_,
                     const at::Tensor& out_, const at::Tensor& lse_, const at::Tensor& slopes_, bool causal,
                     at::Tensor& dq_, at::Tensor& dk_, at::Tensor& dv_) {
  const int64_t B = q_.size(0), T = q_.size(1), H = q_.size(2), S = k_.size(1);
  const scalar_t scale = scalar_t(1.0 / std::sqrt(double(D)));
  const View<scalar_t> dout(dout_), q(q_), k(k_), v(v_), out(out_), dq(dq_), dk(dk_), dv(dv_);
  const scalar_t* lse = lse_.data_ptr<scalar_t>();
  const scalar_t* slopes = slopes_.defined() ? slopes_.data_ptr<scalar_t>() : nullptr;
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    Rows<scalar_t> qr(T, D), kr(S, D), vr(S, D), gr(T, D), o(T, D), dqr(T, D);
    const int64_t Sp = small_gemm::round_up(S, kL<scalar_t>);
    std::vector<scalar_t> dkT(D * Sp), dvT(D * Sp);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      qr.gather(q, b, h, scale, true, true), kr.point(k, b, h), vr.point(v, b, h);
      gr.gather(dout, b, h, 1, false, true), gr.point(dout, b, h), o.gather(out, b, h, 1, false, true);
      std::fill(dkT.begin(), dkT.end(), scalar_t(0)), std::fill(dvT.begin(), dvT.end(), scalar_t(0));
      backward_head<scalar_t, D>(qr, kr, vr, gr, o, lse + bh * T, geometry(q_, k_, causal, slopes, h), scale,
                                 dqr.a.data(), dkT.data(), dvT.data(), Sp);
      scatter(dqr.a.data(), T, D, dq, b, h);
      for (int64_t j = 0; j < S; ++j)
        for (int64_t d = 0; d < D; ++d) {
          dk.at(b, j, h, d) = dkT[d * Sp + j];
          dv.at(b, j, h, d) = dvT[d * Sp + j];
        }
    }
  });
}

constexpr int kMaxHeadDim = 16;  // attention_fast.MAX_HEAD_DIM: d_head is a template argument up to here

// Calls f.template operator()<D>() with the run-time d_head as a compile-time one.
template <class F, int D = 1>
void with_head_dim(int64_t d, F&& f) {
  if constexpr (D <= kMaxHeadDim) {
    if (d == D) return f.template operator()<D>();
    return with_head_dim<F, D + 1>(d, std::forward<F>(f));
  } else {
    TORCH_CHECK(false, "d_head ", d, " is beyond the small-head kernel's ", kMaxHeadDim, ": use SDPA");
  }
}

void check(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "q, k, v must be (B, T, heads, d_head)");
  TORCH_CHECK(k.sizes() == v.sizes(), "k and v must have one shape");
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(2) == k.size(2) && q.size(3) == k.size(3),
              "q and k must agree on batch, heads and d_head");
  TORCH_CHECK(q.size(1) <= k.size(1), "more queries than keys");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), "one dtype for q, k, v");
}

at::Tensor slopes_as(const c10::optional<at::Tensor>& slopes, const at::Tensor& q) {
  return slopes.has_value() ? slopes->contiguous().to(q.scalar_type()) : at::Tensor();
}

// out (B, T, H, D) and lse (B, H, T), the log of each query's softmax denominator (for the backward).
std::vector<at::Tensor> forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const c10::optional<at::Tensor>& slopes, bool causal) {
  check(q, k, v);
  at::Tensor out = at::empty(q.sizes(), q.options());
  at::Tensor lse = at::empty({q.size(0), q.size(2), q.size(1)}, q.options());
  const at::Tensor sl = slopes_as(slopes, q);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "attention_forward", [&] {
    with_head_dim(q.size(3), [&]<int D>() { forward_kernel<scalar_t, D>(q, k, v, sl, causal, out, lse); });
  });
  return {out, lse};
}

// dq, dk, dv written into the tensors given (views of one (B, T, 3, H, D) gradient for a fused QKV input:
// then autograd has no stack to do).
void backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
              const at::Tensor& out, const at::Tensor& lse, const c10::optional<at::Tensor>& slopes, bool causal,
              at::Tensor dq, at::Tensor dk, at::Tensor dv) {
  check(q, k, v);
  TORCH_CHECK(dq.sizes() == q.sizes() && dk.sizes() == k.sizes() && dv.sizes() == v.sizes(), "gradient shapes");
  const at::Tensor sl = slopes_as(slopes, q);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "attention_backward", [&] {
    with_head_dim(q.size(3), [&]<int D>() {
      backward_kernel<scalar_t, D>(dout, q, k, v, out, lse.contiguous(), sl, causal, dq, dk, dv);
    });
  });
}

// ---- LayerNorm over the last dimension --------------------------------------------------------------------
//
// Why: torch's CPU layer_norm backward took 0.44 ms for 3,200 rows of 28 (a fifth of a T=100 training
// step): at so few columns its per-row parallel scheme costs more than the arithmetic. Here the rows are
// split in one slice per thread, each slice keeps its own partial ∂γ, ∂β, and the slices' partials are
// summed at the end.
//   forward:  μ = mean(x), r = 1/√(var(x) + ε), x̂ = (x − μ) r, y = γ x̂ + β
//   backward: g = dy γ, dx = r (g − mean(g) − x̂ mean(g x̂)), ∂γ = Σ_rows dy x̂, ∂β = Σ_rows dy

template <typename scalar_t>
void layer_norm_rows(const scalar_t* x, const scalar_t* w, const scalar_t* b, int64_t C, double eps, int64_t r0,
                     int64_t r1, scalar_t* y, scalar_t* mean, scalar_t* rstd) {
  for (int64_t r = r0; r < r1; ++r) {
    const scalar_t* xr = x + r * C;
    scalar_t mu = 0, var = 0;
    for (int64_t c = 0; c < C; ++c) mu += xr[c];
    mu /= scalar_t(C);
    for (int64_t c = 0; c < C; ++c) var += (xr[c] - mu) * (xr[c] - mu);
    const scalar_t rs = scalar_t(1) / std::sqrt(var / scalar_t(C) + scalar_t(eps));
    scalar_t* yr = y + r * C;
    for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - mu) * rs * w[c] + b[c];
    mean[r] = mu, rstd[r] = rs;
  }
}

template <typename scalar_t>
void layer_norm_backward_rows(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                              const scalar_t* __restrict__ mean, const scalar_t* __restrict__ rstd,
                              const scalar_t* __restrict__ w, int64_t C, int64_t r0, int64_t r1,
                              scalar_t* __restrict__ dx, scalar_t* __restrict__ dw, scalar_t* __restrict__ db,
                              int64_t dy_stride = 0) {  // dy's row stride: C when 0
  const int64_t ldy = dy_stride ? dy_stride : C;
  for (int64_t r = r0; r < r1; ++r) {
    const scalar_t *__restrict__ xr = x + r * C, *__restrict__ dyr = dy + r * ldy;
    const scalar_t mu = mean[r], rs = rstd[r];
    scalar_t mg = 0, mgx = 0;  // Σ_c g_c and Σ_c g_c x̂_c
    for (int64_t c = 0; c < C; ++c) {
      const scalar_t xh = (xr[c] - mu) * rs, g = dyr[c] * w[c];
      mg += g, mgx += g * xh;
      dw[c] += dyr[c] * xh, db[c] += dyr[c];
    }
    mg /= scalar_t(C), mgx /= scalar_t(C);
    scalar_t* __restrict__ dxr = dx + r * C;
    for (int64_t c = 0; c < C; ++c) dxr[c] = rs * (dyr[c] * w[c] - mg - (xr[c] - mu) * rs * mgx);
  }
}

// Rows [0, N) in `slices` contiguous slices (one per thread): slice s is [s N / slices, (s + 1) N / slices).
template <class F>
void over_slices(int64_t N, int64_t slices, F&& f) {
  at::parallel_for(0, slices, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) f(s, s * N / slices, (s + 1) * N / slices);
  });
}

int64_t slices_for(int64_t N, int64_t C) {  // about 16k values a slice at least: less is dispatch
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), N * C / 16384));
}

// x (..., C) contiguous -> y, mean, rstd (rows)
std::vector<at::Tensor> layer_norm_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                                           double eps) {
  TORCH_CHECK(x.is_contiguous() && w.is_contiguous() && b.is_contiguous(), "layer_norm: contiguous inputs");
  const int64_t C = x.size(-1), N = x.numel() / C;
  at::Tensor y = at::empty_like(x), mean = at::empty({N}, x.options()), rstd = at::empty({N}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "layer_norm_forward", [&] {
    over_slices(N, slices_for(N, C), [&](int64_t, int64_t r0, int64_t r1) {
      layer_norm_rows(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), C, eps, r0, r1,
                      y.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>());
    });
  });
  return {y, mean, rstd};
}

// -> dx, dw, db
std::vector<at::Tensor> layer_norm_backward(const at::Tensor& dy_, const at::Tensor& x, const at::Tensor& mean,
                                            const at::Tensor& rstd, const at::Tensor& w) {
  const at::Tensor dy = dy_.contiguous();
  const int64_t C = x.size(-1), N = x.numel() / C, slices = slices_for(N, C);
  at::Tensor dx = at::empty_like(x), partial = at::zeros({slices, 2, C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "layer_norm_backward", [&] {
    scalar_t* part = partial.data_ptr<scalar_t>();
    over_slices(N, slices, [&](int64_t s, int64_t r0, int64_t r1) {
      layer_norm_backward_rows(dy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(),
                               rstd.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), C, r0, r1,
                               dx.data_ptr<scalar_t>(), part + s * 2 * C, part + s * 2 * C + C);
    });
  });
  const at::Tensor sums = partial.sum(0);
  return {dx, sums[0], sums[1]};
}

// ---- the MLP half of a block: y = x + W2 GELU(W1 LayerNorm(x) + b1) + b2, GELU exact: x Φ(x) ----------
//
// Why: at d_model 28 the hidden activations (tokens x 112) are the step's largest tensors, and the library's
// MLP passes over them op by op: the GEMM writes h, GELU reads it and writes a, the next GEMM reads a, and
// the backward as many again (gelu and gelu_backward alone took 0.24 and 0.40 ms on 3,200 x 112 values, a
// tenth of a T=100 training step). Here the rows go in one slice per thread; each slice's elementwise work
// (LayerNorm, bias, GELU and its derivative, residual) is one pass of our own, and its GEMMs are the
// library's (rows_gemm below); a = GELU(h) and GELU'(h) are kept for the backward (one exponential gives
// both). Each slice sums its weight gradients apart; the slices' sums are added at the end.
//   forward:  z = LayerNorm(x), h = z W1ᵀ + b1, a = GELU(h), y = x + a W2ᵀ + b2
//   backward: ∂W2 = Σ dyᵀ a, ∂b2 = Σ dy, dh = (dy W2) ⊙ GELU'(h), ∂W1 = Σ dhᵀ z, ∂b1 = Σ dh, dz = dh W1,
//             dx = dy + LayerNorm's backward of dz (above)
// GELU by Abramowitz & Stegun 7.1.26 for erf (absolute error ≤ 1.5e-7, below float32's resolution of Φ
// near 1) on whole vectors, with the exp above:
//   Φ(x) = (1 + erf(x / √2)) / 2,  erf(z) = sign(z) (1 − t (a1 + t (a2 + ... a5)) e^(−z²)), t = 1 / (1 + p|z|)
//   GELU'(x) = Φ(x) + x φ(x), φ(x) = e^(−x²/2) / √(2π): the same exponential.
// double (the tests' gradchecks): the library's erf.

// 1/a for a ≥ 1: the hardware's 14-bit estimate and one Newton step (~1e-8 relative).
inline V<float> reciprocal(V<float> a) {
#if defined(__AVX512F__)
  if constexpr (kL<float> == 16) {
    V<float> r;
    const __m512 e = _mm512_rcp14_ps(reinterpret_cast<__m512&>(a));
    std::memcpy(&r, &e, sizeof r);
    return r * (2.0f - a * r);
  }
#endif
  return 1.0f / a;
}

inline void phi_and_density(V<float> x, V<float>& Phi, V<float>& density) {
  using Vs = V<float>;
  const Vs z = x * 0.70710678118654752f, az = z < 0 ? -z : z;
  const Vs e = vexp(-z * z);
  const Vs t = reciprocal(1.0f + 0.3275911f * az);
  const Vs poly =
      t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  const Vs erf_abs = 1.0f - poly * e;
  Phi = 0.5f + 0.5f * (z < 0 ? -erf_abs : erf_abs);
  density = e * 0.39894228040143268f;
}

// a = GELU(h) over n values, and with slope given GELU'(h) too (for the backward, which then computes neither).
inline void gelu_values(const float* h, int64_t n, float* a, float* slope) {
  constexpr int L = kL<float>;
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const V<float> v = small_gemm::vload<float, kVB<float>>(h + i);
    V<float> Phi, density;
    phi_and_density(v, Phi, density);
    small_gemm::vstore<float, kVB<float>>(a + i, v * Phi);
    if (slope) small_gemm::vstore<float, kVB<float>>(slope + i, Phi + v * density);
  }
  for (; i < n; ++i) {
    const float Phi = 0.5f * (1.0f + std::erf(h[i] * float(M_SQRT1_2)));
    a[i] = h[i] * Phi;
    if (slope) slope[i] = Phi + h[i] * std::exp(-0.5f * h[i] * h[i]) * 0.39894228040143268f;
  }
}
inline void gelu_values(const double* h, int64_t n, double* a, double* slope) {
  for (int64_t i = 0; i < n; ++i) {
    const double Phi = 0.5 * (1.0 + std::erf(h[i] * M_SQRT1_2));
    a[i] = h[i] * Phi;
    if (slope) slope[i] = Phi + h[i] * std::exp(-0.5 * h[i] * h[i]) * 0.39894228040143268;
  }
}

// The second half of a block, y = x + MLP(LayerNorm(x)), slice by slice. Saved for the backward: a = GELU(h) and
// GELU'(h) (so the backward evaluates no GELU: recomputing them there took a sixth of its time), and each
// row's mean and 1/σ (the LayerNorm's output is recomputed from them).
struct MlpShape {
  int64_t N, C, F;
};

template <typename scalar_t>
struct MlpWeights {
  const scalar_t *ln_w, *ln_b, *w1, *b1, *w2, *b2;
};

// rows [r0, r0 + rows) of LayerNorm(x) into ln (rows x C); with mean, rstd given as outputs (forward)
// or read (backward: recompute).
template <typename scalar_t>
void layer_norm_chunk(const scalar_t* x, const scalar_t* ln_w, const scalar_t* ln_b, int64_t C, double eps,
                      int64_t r0, int64_t rows, scalar_t* mean, scalar_t* rstd, bool compute, scalar_t* ln) {
  if (compute) layer_norm_rows(x, ln_w, ln_b, C, eps, r0, r0 + rows, ln - r0 * C, mean, rstd);
  for (int64_t r = 0; r < rows && !compute; ++r) {
    const scalar_t *xr = x + (r0 + r) * C, mu = mean[r0 + r], rs = rstd[r0 + r];
    for (int64_t c = 0; c < C; ++c) ln[r * C + c] = (xr[c] - mu) * rs * ln_w[c] + ln_b[c];
  }
}

// dx rows [r0, r0 + rows) = dy + the LayerNorm's backward of dz (rows x C, row stride ldz); ∂γ, ∂β added to.
template <typename scalar_t>
void layer_norm_residual_backward(const scalar_t* dz, int64_t ldz, const scalar_t* dy, const scalar_t* x,
                                  const scalar_t* mean, const scalar_t* rstd, const scalar_t* ln_w, int64_t C,
                                  int64_t r0, int64_t rows, scalar_t* dx, scalar_t* dw, scalar_t* db) {
  layer_norm_backward_rows(dz - r0 * ldz, x, mean, rstd, ln_w, C, r0, r0 + rows, dx, dw, db, ldz);
  for (int64_t r = r0; r < r0 + rows; ++r)
    for (int64_t k = 0; k < C; ++k) dx[r * C + k] += dy[r * C + k];
}

// The BLAS that torch links (MKL in its x86 wheels, whose libtorch_cpu exports sgemm_ and dgemm_), as weak
// symbols: null where the library has none (then rows_gemm goes through at::mm_out). Integer arguments are
// passed as pointers to int64_t: on little-endian machines an LP64 BLAS reads their low 32 bits, an ILP64
// one all 64, and both read the same small values.
template <typename scalar_t>
using gemm_fn = void (*)(const char*, const char*, const int64_t*, const int64_t*, const int64_t*, const scalar_t*,
                         const scalar_t*, const int64_t*, const scalar_t*, const int64_t*, const scalar_t*, scalar_t*,
                         const int64_t*);
}  // namespace
extern "C" {
void sgemm_(const char*, const char*, const int64_t*, const int64_t*, const int64_t*, const float*, const float*,
            const int64_t*, const float*, const int64_t*, const float*, float*, const int64_t*) __attribute__((weak));
void dgemm_(const char*, const char*, const int64_t*, const int64_t*, const int64_t*, const double*, const double*,
            const int64_t*, const double*, const int64_t*, const double*, double*, const int64_t*) __attribute__((weak));
}
namespace {
template <typename scalar_t>
gemm_fn<scalar_t> blas_gemm() {
  if constexpr (std::is_same_v<scalar_t, float>)
    return &sgemm_;
  else
    return &dgemm_;
}

// One operand of rows_gemm as the column-major BLAS sees it: op(X) with its leading dimension, where one of
// its (row, column) strides is 1; false where neither is.
inline bool blas_operand(std::array<int64_t, 2> strides, char& trans, int64_t& ld) {
  if (strides[1] == 1) return trans = 'N', ld = std::max<int64_t>(1, strides[0]), true;
  if (strides[0] == 1) return trans = 'T', ld = std::max<int64_t>(1, strides[1]), true;
  return false;
}

// C (M x N, row-major, row stride ldc) = A (M x K) · B (K x N), or C += A · B when accumulate: the library's
// GEMM on matrices given by pointer and (row, column) strides, so a transposed operand is a swap of its
// strides. Row-major C = A B is column-major Cᵀ = Bᵀ Aᵀ, which is the call below. Why the library's: over a
// slice of a whole batch's rows it ran these shapes (K = d_model or 4 d_model, N = d_model to 4 d_model) at
// 150-200 GFLOP/s a core, and small_gemm.h's kernels, which the first version called on chunks of 128 rows
// with weights packed per call, at 50-65 (Xeon with AVX-512, one thread). Why the BLAS symbol and not
// at::mm_out on tensors made with from_blob: a training step makes 27 of these calls at T=25, and three
// tensors and a dispatched op per call cost 3% of the step. Inside a parallel region the library runs on
// the calling thread; with one slice it may use every thread.
template <typename scalar_t>
void rows_gemm(int64_t M, int64_t N, int64_t K, const scalar_t* a, std::array<int64_t, 2> a_strides,
               const scalar_t* b, std::array<int64_t, 2> b_strides, scalar_t* c, int64_t ldc, bool accumulate) {
  char ta, tb;
  int64_t lda, ldb;
  const gemm_fn<scalar_t> gemm = blas_gemm<scalar_t>();
  if (M == 0 || N == 0) return;
  if (gemm && blas_operand(a_strides, ta, lda) && blas_operand(b_strides, tb, ldb) && K > 0) {
    const scalar_t one = 1, beta = accumulate ? 1 : 0;
    const int64_t ldc_ = std::max<int64_t>(1, ldc);
    return gemm(&tb, &ta, &N, &M, &K, &one, b, &ldb, a, &lda, &beta, c, &ldc_);
  }
  const auto opt = at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value);
  const at::Tensor A = at::from_blob(const_cast<scalar_t*>(a), {M, K}, {a_strides[0], a_strides[1]}, opt);
  const at::Tensor Bm = at::from_blob(const_cast<scalar_t*>(b), {K, N}, {b_strides[0], b_strides[1]}, opt);
  at::Tensor Cm = at::from_blob(c, {M, N}, {ldc, 1}, opt);
  if (accumulate)
    Cm.addmm_(A, Bm);
  else
    at::mm_out(Cm, A, Bm);
}

// Row-major (rows x cols) strides, and the strides of its transpose read in place.
inline std::array<int64_t, 2> row_major(int64_t cols) { return {cols, 1}; }
inline std::array<int64_t, 2> transposed(int64_t cols) { return {1, cols}; }

// out[c] += Σ_r rows[r * ld + c] (a bias's gradient)
template <typename scalar_t>
void add_column_sums(const scalar_t* rows, int64_t n, int64_t cols, int64_t ld, scalar_t* out) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < cols; ++c) out[c] += rows[r * ld + c];
}

// One slice of rows per thread, none under 64 rows (fewer is more dispatch than work).
int64_t row_slices(int64_t N) { return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), N / 64)); }

// A slice works on kChunkRows rows at a time, so that their LayerNorm output, h, GELU(h) and gradients stay
// in the core's L2 between the GEMMs: whole slices (an evaluation batch of 256 x 500 tokens: 57 MB for h
// alone) made long sequences 1.3x slower than the chunked kernels before them. 1024: a T <= 32 batch of 32
// is one chunk (each chunk is one more library call per GEMM).
constexpr int64_t kChunkRows = 1024;

template <class F>
void over_chunks(int64_t r0, int64_t r1, F&& f) {
  for (int64_t c0 = r0; c0 < r1; c0 += kChunkRows) f(c0, std::min(c0 + kChunkRows, r1));
}

// This thread's scratch buffer `slot` of at least n values, kept from call to call (no allocation, and no
// page faults, per call).
template <typename scalar_t>
scalar_t* scratch(int slot, int64_t n) {
  thread_local std::vector<scalar_t> buffers[3];
  std::vector<scalar_t>& b = buffers[slot];
  if (int64_t(b.size()) < n) b.resize(n);
  return b.data();
}

// a and slope: where GELU(h) and GELU'(h) are kept for the backward (N x F), or null (evaluation: not kept)
template <typename scalar_t>
void ln_mlp_forward_kernel(const scalar_t* x, const MlpWeights<scalar_t>& w, double eps, MlpShape m, scalar_t* a_kept,
                           scalar_t* slope, scalar_t* mean, scalar_t* rstd, scalar_t* y) {
  const int64_t C = m.C, F = m.F;
  over_slices(m.N, row_slices(m.N), [&](int64_t, int64_t r0, int64_t r1) {
    scalar_t *z = scratch<scalar_t>(0, kChunkRows * C), *h = scratch<scalar_t>(1, kChunkRows * F);
    scalar_t* a_chunk = a_kept ? nullptr : scratch<scalar_t>(2, kChunkRows * F);
    over_chunks(r0, r1, [&](int64_t c0, int64_t c1) {
      const int64_t rows = c1 - c0;
      scalar_t* a = a_kept ? a_kept + c0 * F : a_chunk;
      layer_norm_rows(x, w.ln_w, w.ln_b, C, eps, c0, c1, z - c0 * C, mean, rstd);
      rows_gemm<scalar_t>(rows, F, C, z, row_major(C), w.w1, transposed(C), h, F, false);  // z W1ᵀ
      for (int64_t r = 0; r < rows; ++r) {
        scalar_t* hr = h + r * F;
        for (int64_t f = 0; f < F; ++f) hr[f] += w.b1[f];
        gelu_values(hr, F, a + r * F, slope ? slope + (c0 + r) * F : nullptr);
        for (int64_t c = 0; c < C; ++c) y[(c0 + r) * C + c] = x[(c0 + r) * C + c] + w.b2[c];
      }
      rows_gemm<scalar_t>(rows, C, F, a, row_major(F), w.w2, transposed(F), y + c0 * C, C, true);  // + a W2ᵀ
    });
  });
}

// Parameter gradients: each slice adds into its own row of `grads` (slices x the sizes below, zero on
// entry), laid out as the half's two tensors one after the other (mlp_weights): ∂W1 F x C, ∂W2 C x F, then
// ∂γ C, ∂β C, ∂b1 F, ∂b2 C.
int64_t grad_size(MlpShape m) { return 2 * m.F * m.C + 3 * m.C + m.F; }

template <typename scalar_t>
void ln_mlp_backward_kernel(const scalar_t* dy, const scalar_t* x, const scalar_t* a, const scalar_t* slope,
                            const scalar_t* mean, const scalar_t* rstd, const MlpWeights<scalar_t>& w, MlpShape m,
                            int64_t slices, scalar_t* dx, scalar_t* grads) {
  const int64_t C = m.C, F = m.F;
  over_slices(m.N, slices, [&](int64_t s, int64_t r0, int64_t r1) {
    scalar_t* g = grads + s * grad_size(m);
    scalar_t *gw1 = g, *gw2 = g + F * C, *g_lnw = gw2 + C * F, *g_lnb = g_lnw + C, *gb1 = g_lnb + C, *gb2 = gb1 + F;
    scalar_t *z = scratch<scalar_t>(0, kChunkRows * C), *dh = scratch<scalar_t>(1, kChunkRows * F);
    scalar_t* dz = scratch<scalar_t>(2, kChunkRows * C);
    over_chunks(r0, r1, [&](int64_t c0, int64_t c1) {
      const int64_t rows = c1 - c0;
      const scalar_t* dys = dy + c0 * C;
      rows_gemm<scalar_t>(rows, F, C, dys, row_major(C), w.w2, row_major(F), dh, F, false);  // dy W2
      const scalar_t* sl = slope + c0 * F;
      for (int64_t i = 0; i < rows * F; ++i) dh[i] *= sl[i];  // ⊙ GELU'(h)
      add_column_sums(dys, rows, C, C, gb2);
      add_column_sums(dh, rows, F, F, gb1);
      rows_gemm<scalar_t>(C, F, rows, dys, transposed(C), a + c0 * F, row_major(F), gw2, F, true);  // ∂W2 += dyᵀ a
      layer_norm_chunk(x, w.ln_w, w.ln_b, C, 0.0, c0, rows, const_cast<scalar_t*>(mean), const_cast<scalar_t*>(rstd),
                       false, z);
      rows_gemm<scalar_t>(F, C, rows, dh, transposed(F), z, row_major(C), gw1, C, true);  // ∂W1 += dhᵀ z
      rows_gemm<scalar_t>(rows, C, F, dh, row_major(F), w.w1, row_major(C), dz, C, false);  // dh W1
      layer_norm_residual_backward(dz, C, dy, x, mean, rstd, w.ln_w, C, c0, rows, dx, g_lnw, g_lnb);
    });
  });
}

// The slices' parameter gradients (slices x (matrices' size + vectors' size), each row laid out as the half's
// matrices then its vectors) summed into the first row, which becomes the two gradients as views: no copy
// into tensors of their own (twelve narrow-and-copy ops a call cost more than the LayerNorm's backward).
std::array<at::Tensor, 2> split_grads(const at::Tensor& grads, at::IntArrayRef matrices_shape) {
  const int64_t slices = grads.size(0), n = grads.size(1);
  AT_DISPATCH_FLOATING_TYPES(grads.scalar_type(), "split_grads", [&] {
    scalar_t* g = grads.data_ptr<scalar_t>();
    for (int64_t s = 1; s < slices; ++s)
      for (int64_t i = 0; i < n; ++i) g[i] += g[s * n + i];
  });
  const int64_t m = matrices_shape[0] * matrices_shape[1];
  const at::Tensor first = grads[0];
  return {first.narrow(0, 0, m).view(matrices_shape), first.narrow(0, m, n - m)};
}

// Each half of a block passes its two weight tensors whole (transformer.py's Attention and MLP hold them;
// transformer_fast.py's attention_parts and mlp_parts name the same views, and the tests compare the two
// paths): a list of six views per call cost more in the binding than the kernels spent on LayerNorm.
//   MLP:        matrices (2F, C) = W1 (F x C), then W2 (C x F) row-major;  vectors (3C + F) = γ, β, b1, b2
//   attention:  matrices (4C, C) = Wqkv (3C x C), then Wo (C x C);        vectors (6C) = γ, β, bqkv, bo
void check_half(const char* op, const at::Tensor& x, const at::Tensor& matrices, const at::Tensor& vectors,
                int64_t rows, int64_t length) {
  const int64_t C = x.size(-1);
  TORCH_CHECK(x.is_contiguous() && matrices.is_contiguous() && vectors.is_contiguous(), op, ": contiguous inputs");
  TORCH_CHECK(matrices.scalar_type() == x.scalar_type() && vectors.scalar_type() == x.scalar_type(), op,
              ": weights in x's dtype");
  TORCH_CHECK(matrices.dim() == 2 && matrices.size(0) == rows && matrices.size(1) == C && vectors.dim() == 1 &&
                  vectors.size(0) == length,
              op, ": matrices (", rows, ", ", C, ") and vectors (", length, ") expected");
}

template <typename scalar_t>
MlpWeights<scalar_t> mlp_weights(const at::Tensor& matrices, const at::Tensor& vectors, int64_t C, int64_t F) {
  const scalar_t *m = matrices.data_ptr<scalar_t>(), *v = vectors.data_ptr<scalar_t>();
  return {v, v + C, m, v + 2 * C, m + F * C, v + 2 * C + F};  // γ, β, W1, b1, W2, b2
}

template <typename scalar_t>
struct AttentionWeights {
  const scalar_t *ln_w, *ln_b, *wqkv, *bqkv, *wo, *bo;
  AttentionWeights(const at::Tensor& matrices, const at::Tensor& vectors, int64_t C) {
    const scalar_t *m = matrices.data_ptr<scalar_t>(), *v = vectors.data_ptr<scalar_t>();
    ln_w = v, ln_b = v + C, wqkv = m, bqkv = v + 2 * C, wo = m + 3 * C * C, bo = v + 5 * C;
  }
};

// x (N, C) -> y = x + MLP(LayerNorm(x)) (N, C), a = GELU(h) and GELU'(h) (N, F; both undefined unless
// for_backward), mean, rstd (N)
std::vector<at::Tensor> ln_mlp_forward(const at::Tensor& x, const at::Tensor& matrices, const at::Tensor& vectors,
                                       double eps, bool for_backward) {
  TORCH_CHECK(x.dim() == 2, "ln_mlp: x must be (tokens, d_model)");
  const MlpShape m{x.size(0), x.size(1), matrices.size(0) / 2};
  check_half("ln_mlp", x, matrices, vectors, 2 * m.F, 3 * m.C + m.F);
  at::Tensor y = at::empty_like(x);
  at::Tensor a, slope;  // kept for the backward only
  if (for_backward) a = at::empty({m.N, m.F}, x.options()), slope = at::empty_like(a);
  at::Tensor mean = at::empty({m.N}, x.options()), rstd = at::empty({m.N}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ln_mlp_forward", [&] {
    ln_mlp_forward_kernel<scalar_t>(x.data_ptr<scalar_t>(), mlp_weights<scalar_t>(matrices, vectors, m.C, m.F), eps, m,
                                    for_backward ? a.data_ptr<scalar_t>() : nullptr,
                                    for_backward ? slope.data_ptr<scalar_t>() : nullptr, mean.data_ptr<scalar_t>(),
                                    rstd.data_ptr<scalar_t>(), y.data_ptr<scalar_t>());
  });
  return {y, a, slope, mean, rstd};
}

// -> dx, ∂matrices (2F, C) = [∂W1; ∂W2 as F rows of C], ∂vectors (3C + F) = [∂γ, ∂β, ∂b1, ∂b2]
std::vector<at::Tensor> ln_mlp_backward(const at::Tensor& dy_, const at::Tensor& x, const at::Tensor& a,
                                        const at::Tensor& slope, const at::Tensor& mean, const at::Tensor& rstd,
                                        const at::Tensor& matrices, const at::Tensor& vectors) {
  const at::Tensor dy = dy_.contiguous();
  const MlpShape m{x.size(0), x.size(1), matrices.size(0) / 2};
  check_half("ln_mlp", x, matrices, vectors, 2 * m.F, 3 * m.C + m.F);
  TORCH_CHECK(a.defined() && slope.defined(), "ln_mlp_backward: the forward kept no GELU(h) (for_backward false)");
  at::Tensor dx = at::empty_like(x);
  std::vector<at::Tensor> out{dx};
  const int64_t slices = row_slices(m.N);
  const at::Tensor grads = at::zeros({slices, grad_size(m)}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ln_mlp_backward", [&] {
    ln_mlp_backward_kernel<scalar_t>(dy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(),
                                     slope.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>(),
                                     mlp_weights<scalar_t>(matrices, vectors, m.C, m.F), m, slices,
                                     dx.data_ptr<scalar_t>(), grads.data_ptr<scalar_t>());
  });
  for (auto& t : split_grads(grads, {2 * m.F, m.C})) out.push_back(t);
  return out;
}

// RoPE (transformer.py's rope), on rows of the QKV projection (tokens r0 .. r0 + rows of sequences of T):
// each pair (2i, 2i+1) of q's and k's channels in every head, at position t, turned by the angle θ_ti:
// (a, b) -> (a cos − b sin, a sin + b cos); `back` turns by −θ, which is the rotation's backward (for the
// gradients of q and k). rotation is (2, T, d_head / 2): the cosines, then the sines.
template <typename scalar_t>
void rotate_qk(scalar_t* rows3, int64_t r0, int64_t rows, int64_t T, int64_t C, int64_t heads,
               const scalar_t* rotation, bool back) {
  const int64_t D = C / heads, P = D / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = (r0 + r) % T;
    const scalar_t *cs = rotation + t * P, *sn = rotation + (T + t) * P;
    for (int64_t hk = 0; hk < 2 * heads; ++hk) {  // q's heads, then k's: the first 2C values of the row
      scalar_t* x = rows3 + r * 3 * C + hk * D;
      for (int64_t i = 0; i < P; ++i) {
        const scalar_t a = x[2 * i], b = x[2 * i + 1], c = cs[i], s = back ? -sn[i] : sn[i];
        x[2 * i] = a * c - b * s, x[2 * i + 1] = a * s + b * c;
      }
    }
  }
}

const void* rotation_ptr(const c10::optional<at::Tensor>& rotation, const at::Tensor& x, int64_t T, int64_t D) {
  if (!rotation.has_value()) return nullptr;
  const at::Tensor& r = *rotation;
  TORCH_CHECK(r.is_contiguous() && r.scalar_type() == x.scalar_type() && r.dim() == 3 && r.size(0) == 2 &&
                  r.size(1) == T && r.size(2) * 2 == D,
              "ln_attention: rotation must be (2, T, d_head / 2), contiguous, x's dtype");
  return r.data_ptr();
}

// ---- the attention half of a block: y = x + Attention(LayerNorm(x) Wqkvᵀ + bqkv) Woᵀ + bo ---------------
//
// The two projections slice by slice as the MLP's (the LayerNorm, bias and residual in passes of our own, the
// products the library's), and the attention kernel above between them, on the projection's output in place.
// Saved for the backward: qkv, the attention's output and lse, and each row's mean and 1/σ.
// ∂Wqkv 3C x C, ∂Wo C x C, then ∂γ C, ∂β C, ∂bqkv 3C, ∂bo C: the half's matrices, then its vectors
int64_t attn_grad_size(int64_t C) { return 4 * C * C + 6 * C; }

// x (B, T, C), params [ln_w, ln_b, wqkv, bqkv, wo, bo] -> y, qkv (B, T, 3, H, D), out (B, T, H, D), lse,
// mean, rstd
std::vector<at::Tensor> ln_attention_forward(const at::Tensor& x, const at::Tensor& matrices,
                                             const at::Tensor& vectors, int64_t heads, const c10::optional<at::Tensor>& slopes, bool causal,
                                             double eps, const c10::optional<at::Tensor>& rotation) {
  TORCH_CHECK(x.dim() == 3, "ln_attention: x must be (B, T, d_model)");
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), N = B * T, slices = row_slices(N);
  check_half("ln_attention", x, matrices, vectors, 4 * C, 6 * C);
  at::Tensor qkv = at::empty({B, T, 3, heads, C / heads}, x.options()), y = at::empty_like(x);
  at::Tensor mean = at::empty({N}, x.options()), rstd = at::empty({N}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ln_attention_forward", [&] {
    const AttentionWeights<scalar_t> w(matrices, vectors, C);
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* qp = qkv.data_ptr<scalar_t>();
    const auto* rot = static_cast<const scalar_t*>(rotation_ptr(rotation, x, T, C / heads));
    over_slices(N, slices, [&](int64_t, int64_t r0, int64_t r1) {
      scalar_t* z = scratch<scalar_t>(0, kChunkRows * C);  // LayerNorm(x)
      over_chunks(r0, r1, [&](int64_t c0, int64_t c1) {
        layer_norm_rows(xp, w.ln_w, w.ln_b, C, eps, c0, c1, z - c0 * C, mean.data_ptr<scalar_t>(),
                        rstd.data_ptr<scalar_t>());
        scalar_t* rows3 = qp + c0 * 3 * C;
        rows_gemm<scalar_t>(c1 - c0, 3 * C, C, z, row_major(C), w.wqkv, transposed(C), rows3, 3 * C, false);
        for (int64_t r = 0; r < c1 - c0; ++r)
          for (int64_t k = 0; k < 3 * C; ++k) rows3[r * 3 * C + k] += w.bqkv[k];
        if (rot) rotate_qk(rows3, c0, c1 - c0, T, C, heads, rot, false);
      });
    });
  });
  const auto qkv3 = qkv.unbind(2);
  std::vector<at::Tensor> att = forward(qkv3[0], qkv3[1], qkv3[2], slopes, causal);
  const at::Tensor out = att[0];
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ln_attention_out", [&] {
    const AttentionWeights<scalar_t> w(matrices, vectors, C);
    const scalar_t *xp = x.data_ptr<scalar_t>(), *op = out.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    over_slices(N, slices, [&](int64_t, int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t k = 0; k < C; ++k) yp[r * C + k] = xp[r * C + k] + w.bo[k];
      rows_gemm<scalar_t>(r1 - r0, C, C, op + r0 * C, row_major(C), w.wo, transposed(C), yp + r0 * C, C, true);
    });
  });
  return {y, qkv, out, att[1], mean, rstd};
}

// -> dx, ∂matrices (4C, C) = [∂Wqkv; ∂Wo], ∂vectors (6C) = [∂γ, ∂β, ∂bqkv, ∂bo]
std::vector<at::Tensor> ln_attention_backward(const at::Tensor& dy_, const at::Tensor& x, const at::Tensor& qkv,
                                              const at::Tensor& out, const at::Tensor& lse, const at::Tensor& mean,
                                              const at::Tensor& rstd, const at::Tensor& matrices,
                                              const at::Tensor& vectors, const c10::optional<at::Tensor>& slopes,
                                              bool causal,
                                              const c10::optional<at::Tensor>& rotation) {
  const at::Tensor dy = dy_.contiguous();
  const int64_t C = x.size(2), N = x.size(0) * x.size(1), T = x.size(1), heads = qkv.size(3);
  const int64_t slices = row_slices(N), G = attn_grad_size(C);
  check_half("ln_attention", x, matrices, vectors, 4 * C, 6 * C);
  at::Tensor dx = at::empty_like(x), dout = at::empty_like(out), dqkv = at::empty_like(qkv);
  const at::Tensor grads = at::zeros({slices, G}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ln_attention_backward", [&] {
    const auto* rot = static_cast<const scalar_t*>(rotation_ptr(rotation, x, T, C / heads));
    scalar_t* gp = grads.data_ptr<scalar_t>();
    auto parts = [&](int64_t s) {  // this slice's ∂γ, ∂β, ∂Wqkv, ∂bqkv, ∂Wo, ∂bo
      scalar_t *g = gp + s * G, *v = g + 4 * C * C;
      return std::array<scalar_t*, 6>{v, v + C, g, v + 2 * C, g + 3 * C * C, v + 5 * C};
    };
    const scalar_t *dyp = dy.data_ptr<scalar_t>(), *xp = x.data_ptr<scalar_t>(), *op = out.data_ptr<scalar_t>();
    const AttentionWeights<scalar_t> w(matrices, vectors, C);
    // the output projection: d(out) = dy Wo, ∂Wo += dyᵀ out, ∂bo += Σ dy
    over_slices(N, slices, [&](int64_t s, int64_t r0, int64_t r1) {
      const auto g = parts(s);
      const int64_t rows = r1 - r0;
      rows_gemm<scalar_t>(rows, C, C, dyp + r0 * C, row_major(C), w.wo, row_major(C),
                          dout.data_ptr<scalar_t>() + r0 * C, C, false);
      rows_gemm<scalar_t>(C, C, rows, dyp + r0 * C, transposed(C), op + r0 * C, row_major(C), g[4], C, true);
      add_column_sums(dyp + r0 * C, rows, C, C, g[5]);
    });
    const auto q3 = qkv.unbind(2), d3 = dqkv.unbind(2);
    backward(dout, q3[0], q3[1], q3[2], out, lse, slopes, causal, d3[0], d3[1], d3[2]);
    // the QKV projection and the LayerNorm: dz = dqkv Wqkv, ∂Wqkv += dqkvᵀ z, then dx = dy + LN's backward
    over_slices(N, slices, [&](int64_t s, int64_t r0, int64_t r1) {
      const auto g = parts(s);
      scalar_t *z = scratch<scalar_t>(0, kChunkRows * C), *dz = scratch<scalar_t>(1, kChunkRows * C);
      over_chunks(r0, r1, [&](int64_t c0, int64_t c1) {
        const int64_t rows = c1 - c0;
        scalar_t* dq = dqkv.data_ptr<scalar_t>() + c0 * 3 * C;  // of the rotated q, k: turned back first
        if (rot) rotate_qk(dq, c0, rows, T, C, heads, rot, true);
        layer_norm_chunk(xp, w.ln_w, w.ln_b, C, 0.0, c0, rows, mean.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>(),
                         false, z);
        rows_gemm<scalar_t>(rows, C, 3 * C, dq, row_major(3 * C), w.wqkv, row_major(C), dz, C, false);  // dqkv Wqkv
        rows_gemm<scalar_t>(3 * C, C, rows, dq, transposed(3 * C), z, row_major(C), g[2], C, true);     // dqkvᵀ z
        add_column_sums(dq, rows, 3 * C, 3 * C, g[3]);
        layer_norm_residual_backward(dz, C, dyp, xp, mean.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>(), w.ln_w, C,
                                     c0, rows, dx.data_ptr<scalar_t>(), g[0], g[1]);
      });
    });
  });
  std::vector<at::Tensor> result{dx};
  for (auto& t : split_grads(grads, {4 * C, C})) result.push_back(t);
  return result;
}

// ---- the ops as autograd functions ------------------------------------------------------------------------
//
// Each op's forward and backward above tied together as a C++ autograd node, the form the block calls: a
// Python torch.autograd.Function costs its apply and its backward call in the interpreter, about 30 µs an
// op and a step (5% of a T=25 training step of a 2-layer d_model-28 Transformer at one thread).
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct LayerNormFunction : public torch::autograd::Function<LayerNormFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                            double eps) {
    auto r = layer_norm_forward(x, w, b, eps);
    ctx->save_for_backward({x, r[1], r[2], w});
    return r[0];
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto r = layer_norm_backward(grads[0], s[0], s[1], s[2], s[3]);
    return {r[0], r[1], r[2], at::Tensor()};
  }
};

struct LnMlpFunction : public torch::autograd::Function<LnMlpFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& matrices,
                            const at::Tensor& vectors, double eps, bool for_backward) {
    auto r = ln_mlp_forward(x, matrices, vectors, eps, for_backward);
    ctx->save_for_backward({x, r[1], r[2], r[3], r[4], matrices, vectors});
    return r[0];
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto r = ln_mlp_backward(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
    return {r[0], r[1], r[2], at::Tensor(), at::Tensor()};
  }
};

struct LnAttentionFunction : public torch::autograd::Function<LnAttentionFunction> {
  using Optional = c10::optional<at::Tensor>;  // slopes (ALiBi) and rotation (RoPE): absent when off
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& matrices,
                            const at::Tensor& vectors, int64_t heads, const Optional& slopes, bool causal,
                            double eps, const Optional& rotation) {
    auto r = ln_attention_forward(x, matrices, vectors, heads, slopes, causal, eps, rotation);
    ctx->save_for_backward({x, r[1], r[2], r[3], r[4], r[5], matrices, vectors, slopes.value_or(at::Tensor()),
                            rotation.value_or(at::Tensor())});
    ctx->saved_data["causal"] = causal;
    return r[0];
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto opt = [](const at::Tensor& t) { return t.defined() ? Optional(t) : c10::nullopt; };
    auto r = ln_attention_backward(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], opt(s[8]),
                                   ctx->saved_data["causal"].toBool(), opt(s[9]));
    const at::Tensor none;
    return {r[0], r[1], r[2], none, none, none, none, none};
  }
};

// The whole backbone after the positions (every block's two halves, then the final LayerNorm) as one node:
// the halves' forward and backward functions above, called in turn. Why: between the ops a training step
// spent more in the interpreter (the block modules, each op's checks) and in the autograd engine (a node, a
// view and its backward per half) than in the LayerNorm; one node does that once.
// weights: per block its attention half's matrices and vectors, then its MLP half's; then ln_f's γ and β.
struct BackboneFunction : public torch::autograd::Function<BackboneFunction> {
  using Optional = c10::optional<at::Tensor>;
  // forward without a graph: x (B, T, C) -> y, and (keep) each half's input and what its backward reads
  static at::Tensor run(const at::Tensor& x, at::TensorList w, int64_t heads, const Optional& slopes, bool causal,
                        double eps, const Optional& rotation, bool keep, std::vector<at::Tensor>& kept) {
    const int64_t blocks = (int64_t(w.size()) - 2) / 4, C = x.size(2);
    at::Tensor h = x.contiguous();
    for (int64_t l = 0; l < blocks; ++l) {
      auto a = ln_attention_forward(h, w[4 * l], w[4 * l + 1], heads, slopes, causal, eps, rotation);
      if (keep) kept.insert(kept.end(), {h, a[1], a[2], a[3], a[4], a[5]});
      h = a[0];
      auto m = ln_mlp_forward(h.view({-1, C}), w[4 * l + 2], w[4 * l + 3], eps, keep);
      if (keep) kept.insert(kept.end(), {h, m[1], m[2], m[3], m[4]});
      h = m[0].view(h.sizes());
    }
    auto f = layer_norm_forward(h, w[w.size() - 2], w[w.size() - 1], eps);
    if (keep) kept.insert(kept.end(), {h, f[1], f[2]});
    return f[0];
  }
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList w, int64_t heads,
                            const Optional& slopes, bool causal, double eps, const Optional& rotation) {
    std::vector<at::Tensor> kept;
    at::Tensor y = run(x, w, heads, slopes, causal, eps, rotation, true, kept);
    // the intermediates are this node's own (nothing else holds them to change them): no saved-variable checks
    ctx->saved_data["kept"] = c10::List<at::Tensor>(kept);
    std::vector<at::Tensor> inputs(w.begin(), w.end());
    inputs.push_back(slopes.value_or(at::Tensor()));
    inputs.push_back(rotation.value_or(at::Tensor()));
    ctx->save_for_backward(inputs);
    ctx->saved_data["causal"] = causal;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto inputs = ctx->get_saved_variables();
    // Unless another backward may follow (retain_graph), this vector holds the only references: each block's
    // are dropped once its backward has run, so that the later blocks' backward reuses that memory (kept to
    // the end, T=100 steps ran 4% slower than by halves).
    auto kept = ctx->saved_data["kept"].toTensorList().vec();
    if (!torch::autograd::get_current_graph_task_keep_graph()) ctx->saved_data.erase("kept");
    const auto opt = [](const at::Tensor& t) { return t.defined() ? Optional(t) : c10::nullopt; };
    const Optional slopes = opt(inputs[inputs.size() - 2]), rotation = opt(inputs[inputs.size() - 1]);
    const bool causal = ctx->saved_data["causal"].toBool();
    const int64_t n = int64_t(inputs.size()) - 2, blocks = (n - 2) / 4;
    variable_list out(1 + n + 5);  // x, every weight, then the five non-tensor or optional arguments
    const size_t f = 11 * blocks;  // kept: 6 + 5 per block, then ln_f's input, mean, rstd
    auto r = layer_norm_backward(grads[0], kept[f], kept[f + 1], kept[f + 2], inputs[n - 2]);
    at::Tensor g = r[0];
    out[1 + n - 2] = r[1], out[1 + n - 1] = r[2];
    const auto drop = [&](size_t from, size_t count) {
      for (size_t i = from; i < from + count; ++i) kept[i].reset();
    };
    drop(f, 3);
    for (int64_t l = blocks - 1; l >= 0; --l) {
      const at::Tensor* k = &kept[11 * l];
      const int64_t C = k[6].size(2);
      auto m = ln_mlp_backward(g.view({-1, C}), k[6].view({-1, C}), k[7], k[8], k[9], k[10], inputs[4 * l + 2],
                               inputs[4 * l + 3]);
      out[1 + 4 * l + 2] = m[1], out[1 + 4 * l + 3] = m[2];
      const auto shape = k[6].sizes().vec();
      drop(11 * l + 6, 5);
      auto a = ln_attention_backward(m[0].view(shape), k[0], k[1], k[2], k[3], k[4], k[5], inputs[4 * l],
                                     inputs[4 * l + 1], slopes, causal, rotation);
      out[1 + 4 * l] = a[1], out[1 + 4 * l + 1] = a[2];
      drop(11 * l, 6);
      g = a[0];
    }
    out[0] = g;
    return out;
  }
};

at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, double eps) {
  return LayerNormFunction::apply(x, w, b, eps);
}
at::Tensor ln_mlp(const at::Tensor& x, const at::Tensor& matrices, const at::Tensor& vectors, double eps) {
  // GELU'(h) is kept only where a backward can follow (evaluation under no_grad skips it)
  const bool for_backward =
      at::GradMode::is_enabled() && (x.requires_grad() || matrices.requires_grad() || vectors.requires_grad());
  return LnMlpFunction::apply(x, matrices, vectors, eps, for_backward);
}
at::Tensor ln_attention(const at::Tensor& x, const at::Tensor& matrices, const at::Tensor& vectors, int64_t heads,
                        const c10::optional<at::Tensor>& slopes, bool causal, double eps,
                        const c10::optional<at::Tensor>& rotation) {
  return LnAttentionFunction::apply(x, matrices, vectors, heads, slopes, causal, eps, rotation);
}

at::Tensor backbone(const at::Tensor& x, const std::vector<at::Tensor>& weights, int64_t heads,
                    const c10::optional<at::Tensor>& slopes, bool causal, double eps,
                    const c10::optional<at::Tensor>& rotation) {
  TORCH_CHECK(x.dim() == 3 && weights.size() >= 2 && (weights.size() - 2) % 4 == 0,
              "backbone: x (B, T, d_model) and 4 weights a block, then ln_f's two");
  bool grad = x.requires_grad();
  for (const auto& w : weights) grad = grad || w.requires_grad();
  if (grad && at::GradMode::is_enabled()) return BackboneFunction::apply(x, at::TensorList(weights), heads, slopes, causal, eps, rotation);
  std::vector<at::Tensor> unused;  // evaluation: no node, nothing kept
  return BackboneFunction::run(x, weights, heads, slopes, causal, eps, rotation, false, unused);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("attention_forward", &forward, "small-head softmax attention, forward: (out, lse)");
  m.def("attention_backward", &backward, "small-head softmax attention, backward, into (dq, dk, dv)");
  m.def("layer_norm", &layer_norm, "LayerNorm with its backward: y (an autograd node)");
  m.def("ln_mlp", &ln_mlp, "the MLP half with its backward: y (an autograd node)");
  m.def("ln_attention", &ln_attention, "the attention half with its backward: y (an autograd node)");
  m.def("backbone", &backbone, "every block, then the final LayerNorm, with its backward: y (an autograd node)");
}
