// Fast CPU path of the LSTM family and GRU: one compiled time loop, parametrised by the cell's
// equations (a Cell type below), with a hand-derived backward. lstm_fast.py wraps it in an
// autograd.Function; suite/models/lstm.py and gru_minlstm.py are the readable definitions and the
// oracles the tests compare against.
//
// One layer, time-major. Per step and batch row: the products with the input and recurrent weights
// (small_gemm.h: register-blocked kernels on weights packed once per call; which blocking each product
// runs is a plan measured per CPU and shape, kernel_plan.py), then the fused pointwise gate math on whole
// vectors. The backward takes the weight gradients chunk by chunk of steps inside its loop.
//
// Parallelism: the rows of a batch are independent sequences, so each thread runs the whole time loop
// for its own slice of the batch, with no barrier between steps.
//
// Two forward kernels: the training one keeps every step's h, c and gate activations for the backward;
// the inference one (no_grad) keeps only what the next step reads. A sequence of one step (decoding)
// skips the weight packing, which would cost more than the step.
// Only the headers it uses (not torch/extension.h, which pulls in the whole C++ frontend): the build is
// about twice as fast.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/add.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "small_gemm.h"
#include "vec_math.h"

namespace {

// ---- cells: the pointwise equations of one batch row at one step, and their derivatives -------------

// Variant flags, as lstm_fast.py's cell_code() computes them from suite.models.lstm.Variant.
enum : int64_t {
  kInputGate = 1,
  kForgetGate = 2,
  kOutputGate = 4,
  kInputActivation = 8,
  kOutputActivation = 16,
  kPeepholes = 32,
  kCoupled = 64,
  kGateRecurrence = 128,
  kGru = 1024,
};

// The gates' nonlinearities, on one value or on a vector of them (the cells' forward runs on whole vectors,
// see Lanes below). float: e^x from vec_math.h (relative error ~1e-6), σ(x) = 1 / (1 + e^-x) (absolute
// error ~1e-7), tanh(x) = 2σ(2x) − 1 (~2e-7). On a Xeon with AVX-512 the gate math of a B32 H128 step went
// from 12.6 µs (glibc's vector expf/tanhf) to 7.2. double (the tests' gradchecks): the library.
using vec_math::exp_;
template <class V>
inline V sigmoid(V x) {
  return 1.0f / (1.0f + exp_(-x));
}
template <class V>
inline V tanh_(V x) {
  return 2.0f / (1.0f + exp_(-2.0f * x)) - 1.0f;
}
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
inline double tanh_(double x) { return std::tanh(x); }

// A cell's forward runs along a gate block in vectors of Lanes<scalar_t>::n values (one AVX-512 or AVX2
// register of floats), then one value at a time for the rest (H = 7, 33, ...): the same templated body on
// both. double runs one value at a time.
template <typename scalar_t>
struct Lanes {
  static constexpr int n = 1;
  using type = scalar_t;
};
template <>
struct Lanes<float> {
  static constexpr int n = small_gemm::kLanes<float>;
  using type = small_gemm::Vec<float>;
};
template <class V, typename scalar_t>
inline V load(const scalar_t* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class V, typename scalar_t>
inline void store(scalar_t* p, V v) {
  std::memcpy(p, &v, sizeof v);
}

// One batch row at one forward step (pointers to that row; blocks of H values).
template <typename scalar_t>
struct StepRow {
  const scalar_t* pre;       // x_t W_ihᵀ, one block per gate with weights
  const scalar_t* rec;       // h_{t-1} W_hhᵀ, the same blocks
  const scalar_t* gate_rec;  // FGR: (i, f, o)_{t-1} W_ggᵀ, blocks i, f, o
  const scalar_t* bias;      // LSTM: b_ih + b_hh; GRU: b_ih
  const scalar_t* rec_bias;  // GRU's b_hh
  const scalar_t* h_prev;
  const scalar_t* c_prev;
  scalar_t* h;
  scalar_t* c;
  scalar_t* saved;       // what the backward reads (Cell::kSaved blocks)
  const scalar_t* peep;  // (3, H): p_i, p_f, p_o, zero where a gate has none
};

// One batch row at one backward step.
template <typename scalar_t>
struct GradRow {
  const scalar_t* grad_out;  // ∂L/∂h_t from the layer's output
  scalar_t* dh;        // in: ∂L/∂h_t through step t+1; out (GRU): the part of ∂L/∂h_{t-1} not through W_hh
  scalar_t* dc;        // in: ∂L/∂c_t through step t+1; out: ∂L/∂c_{t-1}
  const scalar_t* de;  // FGR: ∂L/∂(i, f, o)_t through step t+1
  const scalar_t* saved;
  const scalar_t* h_prev;
  const scalar_t* c_prev;
  const scalar_t* c;
  scalar_t* d_pre;  // ∂L/∂(gate pre-activations)
  scalar_t* d_rec;  // GRU: ∂L/∂(h_{t-1} W_hhᵀ + b_hh); the same row as d_pre otherwise
  const scalar_t* peep;
  scalar_t* grad_peep;  // (3, H): ∂L/∂p summed over the rows and steps seen so far
};

// The LSTM family (suite/models/lstm.py), gate blocks in nn.LSTM's order (i, f, g, o) minus dropped gates:
//   i = σ(a_i + p_i c_{t-1})   f = σ(a_f + p_f c_{t-1})   z = g(a_z)   c = f c_{t-1} + i z
//   o = σ(a_o + p_o c)         h = o h(c)                 a = pre + rec + b_ih + b_hh
// A dropped gate is 1 (NIG, NFG, NOG), CIFG has f = 1 - i, NIAF g(z) = z, NOAF h(c) = c, FGR adds
// (i, f, o)_{t-1} W_ggᵀ to a_i, a_f, a_o (a second product in the loop). Saved: i, f, o, z, h(c).
//
// Backward of one step, given δh = ∂L/∂h_t (output + step t+1), δc = ∂L/∂c_t through c_{t+1}, and for
// FGR δe = ∂L/∂(i, f, o)_t through step t+1's gate recurrence:
//   δo   = δh h(c) + δe_o                 δa_o = δo o(1 − o)
//   δc  += δh o h'(c) + δa_o p_o           h'(c) = 1 − h(c)² (tanh) or 1 (NOAF); p_o: o peeks at c_t
//   δi   = δc z + δe_i   δf = δc c_{t-1} + δe_f   δz = δc i
//   δa_i = δi i(1 − i)   δa_f = δf f(1 − f)   δa_z = δz g'(a_z)    (g' = 1 − z² or 1 for NIAF)
//   CIFG: f = 1 − i, so δa_i = (δi − δf) i(1 − i) and there is no δa_f
//   ∂L/∂c_{t-1} = δc f + δa_i p_i + δa_f p_f
// then ∂L/∂h_{t-1} = δa W_hh, δe_{t-1} = (δa_i, δa_f, δa_o) W_gg, ∂L/∂x_t = δa W_ih, and over all steps
// ∂L/∂W = Σ_t δa_tᵀ [x_t | h_{t-1}], ∂L/∂W_gg = Σ_t (δa_i, δa_f, δa_o)ᵀ_t (i, f, o)_{t-1}, ∂L/∂b = Σ_t δa_t,
// ∂L/∂p_i = Σ δa_i c_{t-1}, ∂L/∂p_f = Σ δa_f c_{t-1}, ∂L/∂p_o = Σ δa_o c_t (backward_loop below).
template <int64_t kCode>
struct LstmCell {
  static constexpr bool IG = kCode & kInputGate, CIFG = kCode & kCoupled, FG = (kCode & kForgetGate) && !CIFG;
  static constexpr bool OG = kCode & kOutputGate, IA = kCode & kInputActivation,
                        OA = kCode & kOutputActivation;
  static constexpr bool PH = kCode & kPeepholes, FGR = kCode & kGateRecurrence;
  static constexpr int kI = 0, kF = IG, kZ = IG + FG, kO = IG + FG + 1;  // block of each gate
  static constexpr int kGates = IG + FG + 1 + OG;
  static constexpr int kSaved = 5;  // i, f, o, z, h(c)
  static constexpr bool kHasCell = true, kHasGateRecurrence = FGR, kDirectHiddenGrad = false,
                        kRecurrentBias = false;

  // pre holds x_t W_ihᵀ + h_{t-1} W_hhᵀ (the loop adds the recurrent product into it); kSave: keep what the
  // backward reads (training; FGR's inference also carries (i, f, o) to the next step)
  template <bool kSave, typename scalar_t>
  static void forward(const StepRow<scalar_t>& r, int64_t H) {
    int64_t j = 0;
    for (; j + Lanes<scalar_t>::n <= H; j += Lanes<scalar_t>::n)
      forward_at<kSave, typename Lanes<scalar_t>::type>(r, H, j);
    for (; j < H; ++j) forward_at<kSave, scalar_t>(r, H, j);
  }

  // values j, j+1, ... of every block: as many as V holds
  template <bool kSave, class V, typename scalar_t>
  static void forward_at(const StepRow<scalar_t>& r, int64_t H, int64_t j) {
    auto a_of = [&](int block) { return load<V>(r.pre + block * H + j) + load<V>(r.bias + block * H + j); };
    const V c_prev = load<V>(r.c_prev + j), one = V{} + scalar_t(1);
    V i = one, f = one, o = one;
    if constexpr (IG) {
      V a = a_of(kI);
      if constexpr (PH) a += load<V>(r.peep + j) * c_prev;
      if constexpr (FGR) a += load<V>(r.gate_rec + j);
      i = sigmoid(a);
    }
    if constexpr (CIFG) {
      f = one - i;
    } else if constexpr (FG) {
      V a = a_of(kF);
      if constexpr (PH) a += load<V>(r.peep + H + j) * c_prev;
      if constexpr (FGR) a += load<V>(r.gate_rec + H + j);
      f = sigmoid(a);
    }
    V z = a_of(kZ);
    if constexpr (IA) z = tanh_(z);
    const V c = f * c_prev + i * z;
    if constexpr (OG) {
      V a = a_of(kO);
      if constexpr (PH) a += load<V>(r.peep + 2 * H + j) * c;
      if constexpr (FGR) a += load<V>(r.gate_rec + 2 * H + j);
      o = sigmoid(a);
    }
    V hc = c;
    if constexpr (OA) hc = tanh_(c);
    store(r.c + j, c);
    store(r.h + j, o * hc);
    if constexpr (kSave) {
      store(r.saved + j, i);
      store(r.saved + H + j, f);
      store(r.saved + 2 * H + j, o);
      store(r.saved + 3 * H + j, z);
      store(r.saved + 4 * H + j, hc);
    }
  }

  template <typename scalar_t>
  static void backward(const GradRow<scalar_t>& g, int64_t H) {
    const scalar_t *s = g.saved, *go = g.grad_out, *cp = g.c_prev, *cn = g.c, *p = g.peep, *de = g.de;
    scalar_t *dh = g.dh, *dc = g.dc, *d = g.d_pre, *dp = g.grad_peep;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const scalar_t i = s[j], f = s[H + j], o = s[2 * H + j], z = s[3 * H + j], hc = s[4 * H + j];
      const scalar_t c_prev = cp[j];
      const scalar_t delta_h = dh[j] + go[j];
      scalar_t delta_o = delta_h * hc, delta_i = 0, delta_f = 0;
      if constexpr (FGR) delta_o += de[2 * H + j];
      const scalar_t da_o = OG ? delta_o * o * (1 - o) : scalar_t(0);
      scalar_t delta_c = dc[j] + delta_h * o * (OA ? 1 - hc * hc : scalar_t(1));
      if constexpr (PH && OG) delta_c += da_o * p[2 * H + j];
      delta_i = delta_c * z;
      delta_f = delta_c * c_prev;
      if constexpr (FGR) {
        delta_i += de[j];
        delta_f += de[H + j];
      }
      const scalar_t delta_z = delta_c * i;
      scalar_t da_i = 0, da_f = 0;
      if constexpr (CIFG)
        da_i = (delta_i - delta_f) * i * (1 - i);
      else if constexpr (IG)
        da_i = delta_i * i * (1 - i);
      if constexpr (FG) da_f = delta_f * f * (1 - f);
      const scalar_t da_z = IA ? delta_z * (1 - z * z) : delta_z;
      scalar_t dc_prev = delta_c * f;
      if constexpr (PH) {
        if constexpr (IG) dc_prev += da_i * p[j], dp[j] += da_i * c_prev;
        if constexpr (FG) dc_prev += da_f * p[H + j], dp[H + j] += da_f * c_prev;
        if constexpr (OG) dp[2 * H + j] += da_o * cn[j];
      }
      dc[j] = dc_prev;
      if constexpr (IG) d[kI * H + j] = da_i;
      if constexpr (FG) d[kF * H + j] = da_f;
      d[kZ * H + j] = da_z;
      if constexpr (OG) d[kO * H + j] = da_o;
    }
  }
};

// GRU (suite/models/gru_minlstm.py, nn.GRU's layout), gate blocks (r, z, n), pre = x W_ihᵀ and
// rec = h_{t-1} W_hhᵀ, the biases kept apart since the reset gate multiplies only the recurrent part of n:
//   r = σ(pre_r + b_ir + rec_r + b_hr)   z = σ(pre_z + b_iz + rec_z + b_hz)   R_n = rec_n + b_hn
//   n = tanh(pre_n + b_in + r R_n)       h = (1 − z) n + z h_{t-1}            Saved: r, z, n, R_n.
// Backward, given δh = ∂L/∂h_t:
//   δn = δh (1 − z)   δz = δh (h_{t-1} − n)   δa_n = δn (1 − n²)   δR_n = δa_n r   δr = δa_n R_n
//   δa_r = δr r(1 − r)   δa_z = δz z(1 − z)
//   d_pre = (δa_r, δa_z, δa_n) (the input side), d_rec = (δa_r, δa_z, δR_n) (the recurrent side)
//   ∂L/∂h_{t-1} = δh z + d_rec W_hh (the first term here, the product in the loop)
// and over all steps ∂L/∂W_ih = Σ d_preᵀ x, ∂L/∂b_ih = Σ d_pre, ∂L/∂W_hh = Σ d_recᵀ h_{t-1}, ∂L/∂b_hh = Σ
// d_rec.
struct GruCell {
  static constexpr int kGates = 3, kSaved = 4;
  static constexpr bool kHasCell = false, kHasGateRecurrence = false, kDirectHiddenGrad = true,
                        kRecurrentBias = true;

  // pre = x_t W_ihᵀ and rec = h_{t-1} W_hhᵀ apart (r scales only the recurrent part of n)
  template <bool kSave, typename scalar_t>
  static void forward(const StepRow<scalar_t>& r, int64_t H) {
    int64_t j = 0;
    for (; j + Lanes<scalar_t>::n <= H; j += Lanes<scalar_t>::n)
      forward_at<kSave, typename Lanes<scalar_t>::type>(r, H, j);
    for (; j < H; ++j) forward_at<kSave, scalar_t>(r, H, j);
  }

  template <bool kSave, class V, typename scalar_t>
  static void forward_at(const StepRow<scalar_t>& r, int64_t H, int64_t j) {
    auto at = [&](const scalar_t* p, int block) { return load<V>(p + block * H + j); };
    const V rg = sigmoid(at(r.pre, 0) + at(r.bias, 0) + at(r.rec, 0) + at(r.rec_bias, 0));
    const V z = sigmoid(at(r.pre, 1) + at(r.bias, 1) + at(r.rec, 1) + at(r.rec_bias, 1));
    const V rn = at(r.rec, 2) + at(r.rec_bias, 2);
    const V n = tanh_(at(r.pre, 2) + at(r.bias, 2) + rg * rn);
    store(r.h + j, (scalar_t(1) - z) * n + z * load<V>(r.h_prev + j));
    if constexpr (kSave) {
      store(r.saved + j, rg);
      store(r.saved + H + j, z);
      store(r.saved + 2 * H + j, n);
      store(r.saved + 3 * H + j, rn);
    }
  }

  template <typename scalar_t>
  static void backward(const GradRow<scalar_t>& g, int64_t H) {
    const scalar_t *s = g.saved, *go = g.grad_out, *hp = g.h_prev;
    scalar_t *dh = g.dh, *d = g.d_pre, *dr = g.d_rec;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const scalar_t rg = s[j], z = s[H + j], n = s[2 * H + j], rn = s[3 * H + j];
      const scalar_t delta_h = dh[j] + go[j];
      const scalar_t da_n = delta_h * (1 - z) * (1 - n * n);
      const scalar_t da_r = da_n * rn * rg * (1 - rg);
      const scalar_t da_z = delta_h * (hp[j] - n) * z * (1 - z);
      d[j] = da_r;
      d[H + j] = da_z;
      d[2 * H + j] = da_n;
      dr[j] = da_r;
      dr[H + j] = da_z;
      dr[2 * H + j] = da_n * rg;
      dh[j] = delta_h * z;
    }
  }
};

// Calls f(Cell{}) with the cell of this code (one compiled loop per cell: the flags are constants there).
template <class F>
void with_cell(int64_t code, F&& f) {
  switch (code) {
    case 31: return f(LstmCell<31>{});    // vanilla (= NP)
    case 63: return f(LstmCell<63>{});    // peephole
    case 62: return f(LstmCell<62>{});    // NIG
    case 61: return f(LstmCell<61>{});    // NFG
    case 59: return f(LstmCell<59>{});    // NOG
    case 55: return f(LstmCell<55>{});    // NIAF
    case 47: return f(LstmCell<47>{});    // NOAF
    case 127: return f(LstmCell<127>{});  // CIFG
    case 191: return f(LstmCell<191>{});  // FGR
    case kGru: return f(GruCell{});
    default: TORCH_CHECK(false, "lstm_fast: no compiled cell for code ", code);
  }
}

// ---- the loops ----------------------------------------------------------------------------------------

// The batch split: slice s of n holds rows [s B / n, (s + 1) B / n), at least 4 rows each, one slice per
// thread; each slice runs the whole time loop, with no barrier between steps.
int64_t slice_count(int64_t B) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), B / 4));
}

// Rows per chunk of steps: the products that do not wait on the recurrence (x_t W_ihᵀ, ∂L/∂x_t = δa_t W_ih,
// the weight gradients Σ δa_tᵀ x_t) are taken for a slice's rows over a chunk of steps at once, so the
// weights stream through the cache once per chunk and each product has enough rows to amortise C.
constexpr int64_t kChunkRows = 64;

template <class F>
void for_each_slice(int64_t B, F&& f) {
  const int64_t n = slice_count(B);
  at::parallel_for(0, n, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) f(s, s * B / n, (s + 1) * B / n);
  });
}

// A per-thread buffer that outlives the call, one per slot, uninitialised unless `zero`. A fresh
// allocation of a few hundred KB at every call is a fresh mmap, whose page faults and zeroing cost more
// than a short sequence's steps (a B8 T32 H256 backward spent 15% of its time in the page-fault handler).
enum Slot : int {
  kInputRows, kPre, kRec, kGateRec, kScratch,  // forward
  kPartial, kDh, kDe, kGx, kZeros, kDPre, kDRec, kXp, kHp, kEp, kAp, kSlots  // backward
};
template <typename scalar_t>
scalar_t* buffer(Slot slot, int64_t n, bool zero = false) {
  thread_local std::vector<scalar_t> slots[kSlots];
  std::vector<scalar_t>& v = slots[slot];
  if (int64_t(v.size()) < n) v.resize(n);
  if (zero) std::fill_n(v.data(), n, scalar_t(0));
  return v.data();
}

template <typename scalar_t>
const scalar_t* ptr(const at::Tensor& t) {
  return t.defined() && t.numel() ? t.data_ptr<scalar_t>() : nullptr;
}

// ---- the products' kernels, chosen per shape by the plan ------------------------------------------------

namespace sg = small_gemm;

// BLAS through ATen (MKL on x86 builds of torch, OpenBLAS or Accelerate elsewhere): one more candidate
// for the plan, on plain operands. Its layouts are small_gemm's with rows = cols = 1: A row-major, B
// stored column by column (pack_panels with NR = 1), which BLAS reads as a transposed matrix.
template <typename scalar_t>
void blas_gemm(int64_t M, int64_t N, int64_t K, const scalar_t* a, int64_t lda, const scalar_t* b, scalar_t* c,
               int64_t ldc, bool accumulate) {
  const auto opt = at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value);
  at::Tensor A = at::from_blob(const_cast<scalar_t*>(a), {M, K}, {lda, 1}, opt);
  at::Tensor Bm = at::from_blob(const_cast<scalar_t*>(b), {K, N}, {1, K}, opt);
  at::Tensor C = at::from_blob(c, {M, N}, {ldc, 1}, opt);
  if (accumulate)
    C.addmm_(A, Bm);
  else
    at::mm_out(C, A, Bm);
}
template <typename scalar_t>
void blas_gemm_packed(int64_t M, int64_t N, int64_t K, const scalar_t* a, const scalar_t* b, scalar_t* c,
                      int64_t ldc, bool accumulate) {
  blas_gemm<scalar_t>(M, N, K, a, K, b, c, ldc, accumulate);
}

// Every kernel a product can run on: small_gemm's for this ISA (its default first), then BLAS.
template <typename scalar_t>
const std::vector<sg::Kernel<scalar_t>>& kernel_list() {
  static const std::vector<sg::Kernel<scalar_t>> list = [] {
    std::vector<sg::Kernel<scalar_t>> k = sg::kernels<scalar_t>();
    k.push_back({"blas", 1, 1, &blas_gemm<scalar_t>, &blas_gemm_packed<scalar_t>});
    return k;
  }();
  return list;
}

// The products of one layer that the plan chooses a kernel for, in the order of a plan's indices
// (kernel_plan.py's ROLES): forward h_{t-1} W_hhᵀ (and FGR's W_gg) and x W_ihᵀ; backward δa W_hh (and
// δa W_gg), δa W_ih, and the weight gradients δaᵀ [x | h_{t-1} | e_{t-1}].
enum Role : int { kFwdRecurrent, kFwdInput, kBwdRecurrent, kBwdInput, kBwdWeights, kRoles };

template <typename scalar_t>
using Kernels = std::array<sg::Kernel<scalar_t>, kRoles>;

// plan: one index into kernel_list per role; missing entries (an empty plan) take the default kernel.
template <typename scalar_t>
Kernels<scalar_t> kernels_of(const std::vector<int64_t>& plan) {
  const auto& list = kernel_list<scalar_t>();
  Kernels<scalar_t> k;
  for (int r = 0; r < kRoles; ++r) {
    const int64_t i = r < int64_t(plan.size()) ? plan[r] : 0;
    TORCH_CHECK(0 <= i && i < int64_t(list.size()), "lstm_fast: no kernel ", i, " for this dtype");
    k[r] = list[i];
  }
  return k;
}

// The recurrent weights as one step's product needs them: packed for a sequence, as they are for one step.
template <typename scalar_t>
struct Recurrent {
  const scalar_t* w;  // W (N x K) row-major, or its packed transpose
  int64_t N, K;
  bool packed;
  sg::Kernel<scalar_t> kernel;

  Recurrent(const at::Tensor& weight, bool pack, at::Tensor& storage, const sg::Kernel<scalar_t>& kernel)
      : N(weight.size(0)), K(weight.size(1)), packed(pack), kernel(kernel) {
    w = weight.data_ptr<scalar_t>();
    if (pack) {  // Wᵀ (K x N): element (k, n) = W[n, k]
      storage = at::empty({kernel.packed_size(K, N)}, weight.options());
      kernel.pack(w, K, N, 1, K, storage.data_ptr<scalar_t>());
      w = storage.data_ptr<scalar_t>();
    }
  }
  int64_t padded(int64_t n) const { return kernel.padded(n); }  // the ldc its products need
  // C (M x N) (+)= A (M x K) Wᵀ
  void apply(int64_t M, const scalar_t* a, int64_t lda, scalar_t* c, int64_t ldc, bool accumulate) const {
    if (packed)
      kernel.gemm(M, N, K, a, lda, w, c, ldc, accumulate);
    else
      sg::gemm_unpacked<scalar_t>(M, N, K, a, lda, w, K, c, ldc, accumulate);
  }
};

// One layer's forward: inputs, and the outputs the loop writes.
struct ForwardArgs {
  at::Tensor x, h0, e0, w_ih, w_hh, w_gg, bias, rec_bias, peep;
  at::Tensor hs, cs, saved;
  std::vector<int64_t> plan;
};

// Training: hs (T+1, B, H) with hs[0] = h0, cs likewise (cells with c), saved (T, B, kSaved H).
// Inference: hs is the output (T, B, H); cs (B, H) holds c0 and is updated in place; FGR's gates are
// carried in a scratch row and end in saved (B, 3H).
// Per slice: every few steps pre = x_t W_ihᵀ for the chunk's rows (one product: W_ih streams through the
// cache once per chunk, not once per step); per step rec = h_{t-1} W_hhᵀ (+ (i, f, o)_{t-1} W_ggᵀ), then
// the cell. Taking the input product chunk by chunk rather than as one GEMM before the loop keeps the
// whole forward in one parallel region and never writes out a (T, B, G H) buffer.
template <class Cell, typename scalar_t, bool kTrain>
void forward_loop(ForwardArgs& a) {
  const int64_t T = a.x.size(0), B = a.x.size(1), I = a.x.size(2), H = a.h0.size(1);
  const Kernels<scalar_t> k = kernels_of<scalar_t>(a.plan);
  at::Tensor packed_ih, packed_hh, packed_gg;
  const bool pack = T > 1;  // packing costs about one step's products: not worth it for a single step
  const Recurrent<scalar_t> r_ih(a.w_ih, pack, packed_ih, k[kFwdInput]),
      r_hh(a.w_hh, pack, packed_hh, k[kFwdRecurrent]);
  const Recurrent<scalar_t> r_gg =
      Cell::kHasGateRecurrence ? Recurrent<scalar_t>(a.w_gg, pack, packed_gg, k[kFwdRecurrent]) : r_hh;
  const int64_t SH = Cell::kSaved * H, E = Cell::kHasGateRecurrence ? 3 * H : 0;
  // Row strides of the products' outputs: whole panels of the kernel that writes them. The LSTMs add the
  // recurrent product into pre (one buffer for the cell to read); GRU keeps it apart in rec.
  constexpr bool kFold = !Cell::kRecurrentBias;
  const int64_t GH = Cell::kGates * H, ld_e = r_gg.padded(E);
  const int64_t ld_pre = kFold ? std::max(r_ih.padded(GH), r_hh.padded(GH)) : r_ih.padded(GH),
                ld_rec = kFold ? 0 : r_hh.padded(GH);
  const scalar_t *X = a.x.data_ptr<scalar_t>(), *H0 = a.h0.data_ptr<scalar_t>(), *E0 = ptr<scalar_t>(a.e0);
  const int64_t x_t = a.x.stride(0), x_b = a.x.stride(1);  // x may be a batch-first tensor seen time-major
  const scalar_t *BIAS = a.bias.data_ptr<scalar_t>(), *RB = ptr<scalar_t>(a.rec_bias),
                 *PEEP = ptr<scalar_t>(a.peep);
  scalar_t *HS = a.hs.data_ptr<scalar_t>(), *CS = Cell::kHasCell ? a.cs.data_ptr<scalar_t>() : nullptr;
  scalar_t* S = kTrain ? a.saved.data_ptr<scalar_t>() : nullptr;
  for_each_slice(B, [&](int64_t, int64_t b0, int64_t b1) {
    const int64_t nb = b1 - b0, steps_per_chunk = std::max<int64_t>(1, kChunkRows / nb);
    scalar_t *xc = buffer<scalar_t>(kInputRows, steps_per_chunk * nb * I),
             *pre = buffer<scalar_t>(kPre, steps_per_chunk * nb * ld_pre), *rec = buffer<scalar_t>(kRec, nb * ld_rec),
             *rg = buffer<scalar_t>(kGateRec, nb * ld_e, true),
             *scratch = buffer<scalar_t>(kScratch, kTrain ? 0 : nb * SH, true);
    if (!kTrain && Cell::kHasGateRecurrence && E0)  // the scratch row holds (i, f, o)_{t-1} in its first 3H
      for (int64_t b = 0; b < nb; ++b)
        std::copy(E0 + (b0 + b) * 3 * H, E0 + (b0 + b + 1) * 3 * H, &scratch[b * SH]);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t q = t % steps_per_chunk;
      if (q == 0) {  // the chunk's input products: its x rows gathered, one GEMM
        const int64_t steps = std::min(steps_per_chunk, T - t);
        for (int64_t i = 0; i < steps; ++i)
          for (int64_t b = 0; b < nb; ++b) {
            const scalar_t* x_row = X + (t + i) * x_t + (b0 + b) * x_b;
            std::copy(x_row, x_row + I, &xc[(i * nb + b) * I]);
          }
        r_ih.apply(steps * nb, xc, I, pre, ld_pre, false);
      }
      // h_{t-1}: training keeps all of them in hs (hs[0] = h0); inference reads the last output
      const scalar_t* h_prev =
          kTrain ? HS + (t * B + b0) * H : (t == 0 ? H0 + b0 * H : HS + ((t - 1) * B + b0) * H);
      scalar_t* h_new = HS + ((kTrain ? t + 1 : t) * B + b0) * H;
      scalar_t* c_prev = Cell::kHasCell ? CS + ((kTrain ? t : 0) * B + b0) * H : nullptr;
      scalar_t* c_new = Cell::kHasCell ? CS + ((kTrain ? t + 1 : 0) * B + b0) * H : nullptr;
      scalar_t* s_new = kTrain ? S + (t * B + b0) * SH : scratch;
      if constexpr (kFold)
        r_hh.apply(nb, h_prev, H, pre + q * nb * ld_pre, ld_pre, true);
      else
        r_hh.apply(nb, h_prev, H, rec, ld_rec, false);
      if constexpr (Cell::kHasGateRecurrence) {  // (i, f, o)_{t-1} W_ggᵀ
        if (!kTrain)
          r_gg.apply(nb, scratch, SH, rg, ld_e, false);
        else if (t > 0)
          r_gg.apply(nb, S + ((t - 1) * B + b0) * SH, SH, rg, ld_e, false);
        else if (E0)
          r_gg.apply(nb, E0 + b0 * E, E, rg, ld_e, false);  // else zeros, as rg starts
      }
      for (int64_t b = 0; b < nb; ++b) {
        StepRow<scalar_t> row{pre + (q * nb + b) * ld_pre,
                              rec + b * ld_rec,
                              rg + b * ld_e,
                              BIAS,
                              RB,
                              h_prev + b * H,
                              c_prev ? c_prev + b * H : nullptr,
                              h_new + b * H,
                              c_new ? c_new + b * H : nullptr,
                              s_new + b * SH,
                              PEEP};
        Cell::template forward<kTrain || Cell::kHasGateRecurrence>(row, H);
      }
    }
    if (!kTrain && Cell::kHasGateRecurrence)
      for (int64_t b = 0; b < nb; ++b)
        std::copy(&scratch[b * SH], &scratch[b * SH] + 3 * H,
                  a.saved.data_ptr<scalar_t>() + (b0 + b) * 3 * H);
  });
}

}  // namespace

// x (T, B, I); h0, c0 (B, H); e0 (B, 3H): FGR's (i, f, o) before the first step (empty: zeros);
// w_gg (3H, 3H): FGR's gate recurrence (empty: none); peep (3, H): p_i, p_f, p_o (empty: none).
// train: returns {hs (T+1, B, H), cs (T+1, B, H), saved (T, B, S H)}, outputs = hs[1:];
// else: returns {out (T, B, H), c_n (B, H), e_n (B, 3H)}, h_n = out[-1].
// plan: the kernel of each product (kernel_plan.py; empty: the defaults).
std::vector<at::Tensor> forward(int64_t code, at::Tensor x, at::Tensor h0, at::Tensor c0, at::Tensor e0,
                                at::Tensor w_ih, at::Tensor w_hh, at::Tensor b_ih, at::Tensor b_hh,
                                at::Tensor w_gg, at::Tensor peep, bool train, std::vector<int64_t> plan) {
  x = x.stride(2) == 1 ? x : x.contiguous();  // any (T, B, I) view with rows of I contiguous values
  h0 = h0.contiguous(), w_ih = w_ih.contiguous(), w_hh = w_hh.contiguous();
  c0 = c0.defined() ? c0.contiguous() : c0, e0 = e0.defined() ? e0.contiguous() : e0;
  w_gg = w_gg.defined() ? w_gg.contiguous() : w_gg, peep = peep.defined() ? peep.contiguous() : peep;
  const int64_t T = x.size(0), B = x.size(1), H = h0.size(1);
  std::vector<at::Tensor> result;
  with_cell(code, [&](auto cell) {
    using Cell = decltype(cell);
    // the LSTM's biases enter as their sum; GRU's b_hh stays with the recurrent product (r scales it)
    ForwardArgs a{x,
                  h0,
                  e0,
                  w_ih,
                  w_hh,
                  w_gg,
                  Cell::kRecurrentBias ? b_ih.contiguous() : at::add(b_ih, b_hh),
                  Cell::kRecurrentBias ? b_hh.contiguous() : at::Tensor(),
                  peep,
                  {},
                  {},
                  {},
                  plan};
    at::Tensor& hs = a.hs;
    at::Tensor& cs = a.cs;
    at::Tensor& saved = a.saved;
    cs = at::empty({0}, x.options()), saved = at::empty({0}, x.options());
    if (train) {
      hs = at::empty({T + 1, B, H}, x.options());
      hs[0].copy_(h0);
      if (Cell::kHasCell) {
        cs = at::empty({T + 1, B, H}, x.options());
        cs[0].copy_(c0);
      }
      saved = at::empty({T, B, Cell::kSaved * H}, x.options());
    } else {
      hs = at::empty({T, B, H}, x.options());
      if (Cell::kHasCell) cs = c0.clone();
      if (Cell::kHasGateRecurrence) saved = at::empty({B, 3 * H}, x.options());
    }
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_fast_forward", [&] {
      if (train)
        forward_loop<Cell, scalar_t, true>(a);
      else
        forward_loop<Cell, scalar_t, false>(a);
    });
    result = {hs, cs, saved};
  });
  return result;
}

namespace {

// One layer's backward: the incoming gradients, what the forward kept, and the weights.
struct BackwardArgs {
  at::Tensor grad_out, grad_hn, grad_cn, x, hs, cs, saved, w_ih, w_hh, w_gg, peep;
  bool need_grad_x;
  std::vector<int64_t> plan;
};

// The backward loop, from t = T-1 down to 0, per batch slice. Per step: the cell's backward (δa of every
// row), then ∂L/∂h_{t-1} = δa W_hh (+ FGR's δe_{t-1} = δa W_gg); every few steps, for the chunk's rows while
// they are in cache, ∂L/∂x = δa W_ih and the weight gradients' share Σ δaᵀ [x | h_{t-1} | (i, f, o)_{t-1}],
// into the slice's own partial sums (δa is never written out whole). The partial sums of the
// slices are added in slice order afterwards, so results do not depend on thread timing.
// Returns {∂L/∂x, ∂L/∂h0, ∂L/∂c0, ∂L/∂W_ih, ∂L/∂W_hh, ∂L/∂b_ih, ∂L/∂b_hh, ∂L/∂W_gg, ∂L/∂p}, empty if none.
template <class Cell, typename scalar_t>
std::vector<at::Tensor> backward_loop(const BackwardArgs& a) {
  const Kernels<scalar_t> k = kernels_of<scalar_t>(a.plan);
  const sg::Kernel<scalar_t>&k_rec = k[kBwdRecurrent], &k_in = k[kBwdInput], &k_w = k[kBwdWeights];
  const int64_t T = a.grad_out.size(0), B = a.grad_out.size(1), H = a.grad_out.size(2), I = a.x.size(2);
  const int64_t GH = Cell::kGates * H, SH = Cell::kSaved * H, E = Cell::kHasGateRecurrence ? 3 * H : 0;
  const bool FGR = Cell::kHasGateRecurrence, PH = a.peep.numel() > 0, gx_on = a.need_grad_x;
  const auto opt = a.grad_out.options();
  // B operands of the per-step products: W_hh (K = G H, N = H), W_ih (N = I), W_gg (N = 3H), row-major
  auto packed = [&](const at::Tensor& w, int64_t N, const sg::Kernel<scalar_t>& kernel) {  // all G H rows
    at::Tensor out = at::empty({kernel.packed_size(GH, N)}, opt);
    kernel.pack(w.data_ptr<scalar_t>(), GH, N, N, 1, out.data_ptr<scalar_t>());
    return out;
  };
  const at::Tensor p_hh = packed(a.w_hh, H, k_rec), p_ih = gx_on ? packed(a.w_ih, I, k_in) : at::Tensor();
  // FGR: δe = (δa_i, δa_f) W_gg[0:2H] + δa_o W_gg[2H:3H] (the g block has no gate recurrence)
  at::Tensor p_gg_if, p_gg_o;
  if (FGR) {
    p_gg_if = at::empty({k_rec.packed_size(2 * H, E)}, opt);
    p_gg_o = at::empty({k_rec.packed_size(H, E)}, opt);
    k_rec.pack(a.w_gg.data_ptr<scalar_t>(), 2 * H, E, E, 1, p_gg_if.data_ptr<scalar_t>());
    k_rec.pack(a.w_gg.data_ptr<scalar_t>() + 2 * H * E, H, E, E, 1, p_gg_o.data_ptr<scalar_t>());
  }
  at::Tensor grad_x = gx_on ? at::empty({T, B, I}, opt) : at::empty({0}, opt);
  at::Tensor grad_h0 = at::empty({B, H}, opt);
  at::Tensor grad_c0 = Cell::kHasCell ? a.grad_cn.clone() : at::empty({0}, opt);  // carried in place
  // each slice's partial sums: ∂W_ih, ∂W_hh, ∂W_gg (columns padded for k_w), ∂b_ih, ∂b_hh (GRU), ∂p
  const int64_t ld_i = k_w.padded(I), ld_h = k_w.padded(H), ld_e = k_w.padded(E);
  // the per-step outputs' row strides: ∂L/∂h_{t-1}, FGR's δe (k_rec writes them), ∂L/∂x (k_in)
  const int64_t ld_dh = k_rec.padded(H), ld_de = k_rec.padded(E), ld_gx = k_in.padded(I);
  const int64_t o_hh = GH * ld_i, o_gg = o_hh + GH * ld_h, o_b = o_gg + (FGR ? GH * ld_e : 0),
                o_bh = o_b + GH;
  const int64_t o_p = o_bh + GH, n_partial = o_p + 3 * H;
  scalar_t* partial = buffer<scalar_t>(kPartial, slice_count(B) * n_partial);  // the calling thread's

  const scalar_t *GO = a.grad_out.data_ptr<scalar_t>(), *GHN = a.grad_hn.data_ptr<scalar_t>();
  const scalar_t *X = a.x.data_ptr<scalar_t>(), *HS = a.hs.data_ptr<scalar_t>(), *CS = ptr<scalar_t>(a.cs);
  const int64_t x_t = a.x.stride(0), x_b = a.x.stride(1);
  const scalar_t *S = a.saved.data_ptr<scalar_t>(), *PEEP = ptr<scalar_t>(a.peep);
  const scalar_t *WHH = p_hh.data_ptr<scalar_t>(), *WIH = gx_on ? p_ih.data_ptr<scalar_t>() : nullptr;
  const scalar_t *WGG_IF = FGR ? p_gg_if.data_ptr<scalar_t>() : nullptr,
                 *WGG_O = FGR ? p_gg_o.data_ptr<scalar_t>() : nullptr;
  scalar_t *GX = gx_on ? grad_x.data_ptr<scalar_t>() : nullptr, *GH0 = grad_h0.data_ptr<scalar_t>();
  scalar_t* DC = Cell::kHasCell ? grad_c0.data_ptr<scalar_t>() : nullptr;

  for_each_slice(B, [&](int64_t slice, int64_t b0, int64_t b1) {
    const int64_t nb = b1 - b0, steps_per_chunk = std::max<int64_t>(1, kChunkRows / nb),
                  K_max = steps_per_chunk * nb;
    scalar_t* acc = partial + slice * n_partial;
    std::fill_n(acc, n_partial, scalar_t(0));
    scalar_t *dh = buffer<scalar_t>(kDh, nb * ld_dh, true), *de = buffer<scalar_t>(kDe, nb * ld_de, true),
             *gx = buffer<scalar_t>(kGx, gx_on ? K_max * ld_gx : 0), *zeros = buffer<scalar_t>(kZeros, E, true);
    scalar_t *d_pre = buffer<scalar_t>(kDPre, K_max * GH),
             *d_rec = buffer<scalar_t>(kDRec, Cell::kDirectHiddenGrad ? K_max * GH : 0);
    scalar_t *xp = buffer<scalar_t>(kXp, k_w.packed_size(K_max, I)),
             *hp = buffer<scalar_t>(kHp, k_w.packed_size(K_max, H)),
             *ep = buffer<scalar_t>(kEp, FGR ? k_w.packed_size(K_max, E) : 0),
             *ap = buffer<scalar_t>(kAp, k_w.packed_columns_size(GH, K_max));
    scalar_t* DR = Cell::kDirectHiddenGrad ? d_rec : d_pre;
    for (int64_t b = 0; b < nb; ++b) std::copy(GHN + (b0 + b) * H, GHN + (b0 + b + 1) * H, &dh[b * ld_dh]);

    // the chunk's rows k = q nb + b belong to step t_first - q, batch row b0 + b
    auto flush = [&](int64_t t_first, int64_t K) {
      auto row = [&](int64_t k) { return (t_first - k / nb) * B + b0 + k % nb; };
      if (gx_on) {  // ∂L/∂x = δa W_ih
        k_in.gemm(K, I, GH, d_pre, GH, WIH, gx, ld_gx, false);
        for (int64_t k = 0; k < K; ++k) std::copy(&gx[k * ld_gx], &gx[k * ld_gx] + I, GX + row(k) * I);
      }
      k_w.pack_rows(K, I, [&](int64_t k) { return X + (t_first - k / nb) * x_t + (b0 + k % nb) * x_b; }, xp);
      k_w.pack_rows(K, H, [&](int64_t k) { return HS + row(k) * H; }, hp);  // hs[t] = h_{t-1}
      k_w.pack_columns(GH, K, [&](int64_t k) { return d_pre + k * GH; }, ap);
      k_w.gemm_packed(GH, I, K, ap, xp, acc, ld_i, true);
      if (Cell::kDirectHiddenGrad) k_w.pack_columns(GH, K, [&](int64_t k) { return DR + k * GH; }, ap);
      k_w.gemm_packed(GH, H, K, ap, hp, acc + o_hh, ld_h, true);
      if (FGR) {  // (i, f, o)_{t-1}: the first 3H of step t-1's saved row; zeros before the first step
        k_w.pack_rows(
            K, E, [&](int64_t k) { return row(k) >= B ? S + (row(k) - B) * SH : zeros; }, ep);
        k_w.gemm_packed(GH, E, K, ap, ep, acc + o_gg, ld_e, true);
      }
      for (int64_t k = 0; k < K; ++k) {
        scalar_t *db = acc + o_b, *dbh = acc + o_bh;
        const scalar_t *dp = d_pre + k * GH, *dr = DR + k * GH;
#pragma omp simd
        for (int64_t g = 0; g < GH; ++g) db[g] += dp[g];
        if (Cell::kRecurrentBias) {
#pragma omp simd
          for (int64_t g = 0; g < GH; ++g) dbh[g] += dr[g];
        }
      }
    };

    int64_t q = 0, t_first = T - 1;
    for (int64_t t = T - 1; t >= 0; --t) {
      if (q == 0) t_first = t;
      scalar_t *dp = d_pre + q * nb * GH, *dr = DR + q * nb * GH;
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t row = t * B + b0 + b;
        GradRow<scalar_t> g{GO + row * H,
                            &dh[b * ld_dh],
                            DC ? DC + (b0 + b) * H : nullptr,
                            FGR ? &de[b * ld_de] : nullptr,
                            S + row * SH,
                            HS + row * H,
                            CS ? CS + row * H : nullptr,
                            CS ? CS + row * H + B * H : nullptr,
                            dp + b * GH,
                            dr + b * GH,
                            PEEP,
                            acc + o_p};
        Cell::backward(g, H);
      }
      k_rec.gemm(nb, H, GH, dr, GH, WHH, dh, ld_dh, Cell::kDirectHiddenGrad);  // ∂L/∂h_{t-1}
      if (FGR && t > 0) {  // ∂L/∂(i, f, o)_{t-1}
        k_rec.gemm(nb, E, 2 * H, dp, GH, WGG_IF, de, ld_de, false);
        k_rec.gemm(nb, E, H, dp + 3 * H, GH, WGG_O, de, ld_de, true);
      }
      if (++q == steps_per_chunk || t == 0) {
        flush(t_first, q * nb);
        q = 0;
      }
    }
    for (int64_t b = 0; b < nb; ++b) std::copy(&dh[b * ld_dh], &dh[b * ld_dh] + H, GH0 + (b0 + b) * H);
  });

  // the slices' partial sums, added in slice order, into unpadded tensors
  auto total = [&](int64_t offset, int64_t rows, int64_t cols, int64_t ld) {
    at::Tensor out = at::zeros({rows, cols}, opt);
    scalar_t* o = out.data_ptr<scalar_t>();
    for (int64_t s = 0; s < slice_count(B); ++s)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) o[r * cols + c] += partial[s * n_partial + offset + r * ld + c];
    return out;
  };
  auto grad_w_ih = total(0, GH, I, ld_i), grad_w_hh = total(o_hh, GH, H, ld_h);
  auto grad_b_ih = total(o_b, 1, GH, GH).view({GH});
  auto grad_b_hh =
      Cell::kRecurrentBias ? total(o_bh, 1, GH, GH).view({GH}) : grad_b_ih;  // LSTM: they enter as a sum
  // the rows of the gates with a gate recurrence: i, f, o (not g)
  auto grad_w_gg = FGR ? at::cat({total(o_gg, 2 * H, E, ld_e), total(o_gg + 3 * H * ld_e, H, E, ld_e)})
                       : at::empty({0}, opt);
  auto grad_peep = PH ? total(o_p, 3, H, H) : at::empty({0}, opt);
  return {grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_gg, grad_peep};
}

}  // namespace

std::vector<at::Tensor> backward(int64_t code, at::Tensor grad_out, at::Tensor grad_hn, at::Tensor grad_cn,
                                 at::Tensor x, at::Tensor hs, at::Tensor cs, at::Tensor saved,
                                 at::Tensor w_ih, at::Tensor w_hh, at::Tensor w_gg, at::Tensor peep,
                                 bool need_grad_x, std::vector<int64_t> plan) {
  BackwardArgs a{grad_out.contiguous(),
                 grad_hn.contiguous(),
                 grad_cn.contiguous(),
                 x.stride(2) == 1 ? x : x.contiguous(),
                 hs,
                 cs,
                 saved,
                 w_ih.contiguous(),
                 w_hh.contiguous(),
                 w_gg.contiguous(),
                 peep.contiguous(),
                 need_grad_x,
                 plan};
  std::vector<at::Tensor> result;
  with_cell(code, [&](auto cell) {
    AT_DISPATCH_FLOATING_TYPES(a.grad_out.scalar_type(), "lstm_fast_backward",
                               [&] { result = backward_loop<decltype(cell), scalar_t>(a); });
  });
  return result;
}

// How many threads at::parallel_for hands n tasks to in this build: 1 where the file was compiled without
// OpenMP (at::parallel_for then runs every batch slice on the calling thread). A test checks it.
int64_t parallel_threads(int64_t n) {
  std::atomic<int64_t> calls{0};
  at::parallel_for(0, n, 1, [&](int64_t, int64_t) { ++calls; });
  return calls.load();
}

// ---- what the plan (kernel_plan.py) needs to know and to measure -----------------------------------------

// The kernels' names, in the order of a plan's indices (float64: the default kernel and BLAS).
std::vector<std::string> kernel_names(bool float64) {
  std::vector<std::string> names;
  auto add = [&](const auto& list) {
    for (const auto& k : list) names.emplace_back(k.name);
  };
  float64 ? add(kernel_list<double>()) : add(kernel_list<float>());
  return names;
}

// Rows of the largest batch slice a call with this batch runs on each thread (at the current thread count).
int64_t slice_rows(int64_t B) {
  const int64_t n = slice_count(B);
  return (B + n - 1) / n;
}

// Seconds per call of one layer of this cell on one batch slice (B rows, on the calling thread), T steps,
// with each kernel of `which` in turn for one role and `base` for the others: the real loop, so that what
// is measured is what runs (timed apart, a GEMM ranked kernels differently: a 4-row tile that streams
// its panel eight times won by 5% alone and lost 2x in the loop). A forward role times the inference
// forward; a backward role the backward of one training forward. Rounds over the kernels in turn, so that
// a burst of load on a shared machine falls on all of them, until `seconds` have passed (3 rounds at
// least); each kernel's fastest call.
std::vector<double> time_plans(int64_t code, bool float64, int64_t B, int64_t T, int64_t I, int64_t H,
                               int64_t role, std::vector<int64_t> which, std::vector<int64_t> base,
                               double seconds) {
  using clock = std::chrono::steady_clock;
  TORCH_CHECK(0 <= role && role < kRoles && int64_t(base.size()) == kRoles, "lstm_fast: bad plan to time");
  int64_t G = 0;
  bool fgr = false, peep = false;
  with_cell(code, [&](auto cell) {
    using Cell = decltype(cell);
    G = Cell::kGates, fgr = Cell::kHasGateRecurrence;
  });
  peep = code != kGru && (code & kPeepholes);
  const auto opt = at::TensorOptions().dtype(float64 ? at::kDouble : at::kFloat);
  auto rand = [&](std::vector<int64_t> size, double scale) { return at::randn(size, opt).mul_(scale); };
  const at::Tensor x = rand({T, B, I}, 1), h0 = rand({B, H}, 0.5), c0 = rand({B, H}, 0.5);
  const at::Tensor w_ih = rand({G * H, I}, 0.1), w_hh = rand({G * H, H}, 0.1), b_ih = rand({G * H}, 0.1),
                   b_hh = rand({G * H}, 0.1), none = at::empty({0}, opt);
  const at::Tensor w_gg = fgr ? rand({3 * H, 3 * H}, 0.1) : none, p = peep ? rand({3, H}, 0.1) : none;
  const bool backward_role = role >= kBwdRecurrent;
  std::vector<at::Tensor> kept;  // a training forward's hs, cs, saved, for the backward roles
  at::Tensor grad_out, grad_hn, grad_cn;
  if (backward_role) {
    kept = forward(code, x, h0, c0, none, w_ih, w_hh, b_ih, b_hh, w_gg, p, true, base);
    grad_out = rand({T, B, H}, 1), grad_hn = rand({B, H}, 1), grad_cn = code == kGru ? none : rand({B, H}, 1);
  }
  auto call = [&](int64_t kernel) {
    std::vector<int64_t> plan = base;
    plan[role] = kernel;
    if (backward_role)
      backward(code, grad_out, grad_hn, grad_cn, x, kept[0], kept[1], kept[2], w_ih, w_hh, w_gg, p, true, plan);
    else
      forward(code, x, h0, c0, none, w_ih, w_hh, b_ih, b_hh, w_gg, p, false, plan);
  };
  std::vector<double> best(which.size(), 1e30);
  for (int64_t kernel : which) call(kernel);  // warm-up: caches, BLAS's first-call setup
  const auto start = clock::now();
  for (int round = 0; round < 3 || std::chrono::duration<double>(clock::now() - start).count() < seconds;
       ++round)
    for (size_t j = 0; j < which.size(); ++j) {
      const auto t0 = clock::now();
      call(which[j]);
      best[j] = std::min(best[j], std::chrono::duration<double>(clock::now() - t0).count());
    }
  return best;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("parallel_threads", &parallel_threads, "threads at::parallel_for uses for n tasks in this build");
  m.def("kernel_names", &kernel_names, "the GEMM kernels a plan chooses from, in index order");
  m.attr("chunk_rows") = kChunkRows;
  m.def("slice_rows", &slice_rows, "rows of the largest batch slice a call with this batch runs per thread");
  m.def("time_plans", &time_plans, "seconds per layer call with each kernel in one role (one slice, 1 thread)");
  m.def("forward", &forward, "recurrent layer forward (time-major; training or inference kernel)");
  m.def("backward", &backward, "recurrent layer backward (hand-derived BPTT): every gradient of the layer");
}
