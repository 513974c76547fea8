// Fast CPU path of the LSTM family and GRU: one compiled time loop, parametrised by the cell's
// equations (a Cell type below), with a hand-derived backward. lstm_fast.py wraps it in an
// autograd.Function; suite/models/lstm.py and gru_minlstm.py are the readable definitions and the
// oracles the tests compare against.
//
// One layer, time-major. Per step and batch row: the products with the input and recurrent weights
// (small_gemm.h: a register-blocked micro-kernel on weights packed once per call), then the fused
// pointwise gate math. The weight gradients are large GEMMs after the backward loop (lstm_fast.py).
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
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "small_gemm.h"

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

// The gates' nonlinearities, written so that the compiler vectorises the loops that call them. float:
// exp by range reduction x = n ln2 + r and a degree-6 polynomial for e^r (Cephes' expf, ~1 ulp), 2^n
// from the exponent bits; tanh(x) = 2σ(2x) − 1 (absolute error ~1e-7). About 3x faster here than
// glibc's vector expf/tanhf. double (the tests' gradchecks): the library functions.
inline float exp_(float x) {
  x = std::fmin(std::fmax(x, -87.0f), 88.0f);  // e^x stays a normal float, so 1 + e^x never overflows
  const float n = __builtin_rintf(x * 1.44269504088896341f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;  // ln2 in two parts: r exact to float precision
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * __builtin_bit_cast(float, (int32_t(n) + 127) << 23);
}
inline double exp_(double x) { return std::exp(x); }
template <typename scalar_t>
inline scalar_t sigmoid(scalar_t x) {
  return scalar_t(1) / (scalar_t(1) + exp_(-x));
}
inline float tanh_(float x) { return 2.0f / (1.0f + exp_(-2.0f * x)) - 1.0f; }
inline double tanh_(double x) { return std::tanh(x); }

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

  template <typename scalar_t>
  static void forward(const StepRow<scalar_t>& r, int64_t H) {
    const scalar_t *pre = r.pre, *rec = r.rec, *bias = r.bias, *cp = r.c_prev, *p = r.peep, *gr = r.gate_rec;
    scalar_t *s = r.saved, *c_out = r.c, *h_out = r.h;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const scalar_t c_prev = cp[j];
      scalar_t i = 1, f = 1, o = 1;
      if constexpr (IG) {
        scalar_t a = pre[kI * H + j] + rec[kI * H + j] + bias[kI * H + j];
        if constexpr (PH) a += p[j] * c_prev;
        if constexpr (FGR) a += gr[j];
        i = sigmoid(a);
      }
      if constexpr (CIFG) {
        f = 1 - i;
      } else if constexpr (FG) {
        scalar_t a = pre[kF * H + j] + rec[kF * H + j] + bias[kF * H + j];
        if constexpr (PH) a += p[H + j] * c_prev;
        if constexpr (FGR) a += gr[H + j];
        f = sigmoid(a);
      }
      const scalar_t a_z = pre[kZ * H + j] + rec[kZ * H + j] + bias[kZ * H + j];
      const scalar_t z = IA ? tanh_(a_z) : a_z;
      const scalar_t c = f * c_prev + i * z;
      if constexpr (OG) {
        scalar_t a = pre[kO * H + j] + rec[kO * H + j] + bias[kO * H + j];
        if constexpr (PH) a += p[2 * H + j] * c;
        if constexpr (FGR) a += gr[2 * H + j];
        o = sigmoid(a);
      }
      const scalar_t hc = OA ? tanh_(c) : c;
      c_out[j] = c;
      h_out[j] = o * hc;
      s[j] = i;
      s[H + j] = f;
      s[2 * H + j] = o;
      s[3 * H + j] = z;
      s[4 * H + j] = hc;
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

  template <typename scalar_t>
  static void forward(const StepRow<scalar_t>& r, int64_t H) {
    const scalar_t *pre = r.pre, *rec = r.rec, *bi = r.bias, *b = r.rec_bias, *hp = r.h_prev;
    scalar_t *s = r.saved, *h_out = r.h;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const scalar_t rg = sigmoid(pre[j] + bi[j] + rec[j] + b[j]);
      const scalar_t z = sigmoid(pre[H + j] + bi[H + j] + rec[H + j] + b[H + j]);
      const scalar_t rn = rec[2 * H + j] + b[2 * H + j];
      const scalar_t n = tanh_(pre[2 * H + j] + bi[2 * H + j] + rg * rn);
      h_out[j] = (1 - z) * n + z * hp[j];
      s[j] = rg;
      s[H + j] = z;
      s[2 * H + j] = n;
      s[3 * H + j] = rn;
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

template <typename scalar_t>
const scalar_t* ptr(const at::Tensor& t) {
  return t.defined() && t.numel() ? t.data_ptr<scalar_t>() : nullptr;
}

// The recurrent weights as one step's product needs them: packed for a sequence, as they are for one step.
template <typename scalar_t>
struct Recurrent {
  const scalar_t* w;  // W (N x K) row-major, or its packed transpose
  int64_t N, K;
  bool packed;

  Recurrent(const at::Tensor& weight, bool pack, at::Tensor& storage)
      : N(weight.size(0)), K(weight.size(1)), packed(pack) {
    w = weight.data_ptr<scalar_t>();
    if (pack) {  // Wᵀ (K x N): element (k, n) = W[n, k]
      storage = at::empty({small_gemm::packed_size<scalar_t>(K, N)}, weight.options());
      small_gemm::pack<scalar_t>(w, K, N, 1, K, storage.data_ptr<scalar_t>());
      w = storage.data_ptr<scalar_t>();
    }
  }
  // C (M x N) (+)= A (M x K) Wᵀ
  void apply(int64_t M, const scalar_t* a, int64_t lda, scalar_t* c, int64_t ldc, bool accumulate) const {
    if (packed)
      small_gemm::gemm<scalar_t>(M, N, K, a, lda, w, c, ldc, accumulate);
    else
      small_gemm::gemm_unpacked<scalar_t>(M, N, K, a, lda, w, K, c, ldc, accumulate);
  }
};

// One layer's forward: inputs, and the outputs the loop writes.
struct ForwardArgs {
  at::Tensor x, h0, e0, w_ih, w_hh, w_gg, bias, rec_bias, peep;
  at::Tensor hs, cs, saved;
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
  const int64_t SH = Cell::kSaved * H, ld = small_gemm::padded<scalar_t>(Cell::kGates * H);
  const int64_t E = Cell::kHasGateRecurrence ? 3 * H : 0, ld_e = small_gemm::padded<scalar_t>(E);
  at::Tensor packed_ih, packed_hh, packed_gg;
  const bool pack = T > 1;  // packing costs about one step's products: not worth it for a single step
  const Recurrent<scalar_t> r_ih(a.w_ih, pack, packed_ih), r_hh(a.w_hh, pack, packed_hh);
  const Recurrent<scalar_t> r_gg =
      Cell::kHasGateRecurrence ? Recurrent<scalar_t>(a.w_gg, pack, packed_gg) : r_hh;
  const scalar_t *X = a.x.data_ptr<scalar_t>(), *H0 = a.h0.data_ptr<scalar_t>(), *E0 = ptr<scalar_t>(a.e0);
  const scalar_t *BIAS = a.bias.data_ptr<scalar_t>(), *RB = ptr<scalar_t>(a.rec_bias),
                 *PEEP = ptr<scalar_t>(a.peep);
  scalar_t *HS = a.hs.data_ptr<scalar_t>(), *CS = Cell::kHasCell ? a.cs.data_ptr<scalar_t>() : nullptr;
  scalar_t* S = kTrain ? a.saved.data_ptr<scalar_t>() : nullptr;
  for_each_slice(B, [&](int64_t, int64_t b0, int64_t b1) {
    const int64_t nb = b1 - b0, steps_per_chunk = std::max<int64_t>(1, kChunkRows / nb);
    std::vector<scalar_t> xc(steps_per_chunk * nb * I), pre(steps_per_chunk * nb * ld), rec(nb * ld),
        rg(nb * ld_e);
    std::vector<scalar_t> scratch(kTrain ? 0 : nb * SH);
    if (!kTrain && Cell::kHasGateRecurrence && E0)  // the scratch row holds (i, f, o)_{t-1} in its first 3H
      for (int64_t b = 0; b < nb; ++b)
        std::copy(E0 + (b0 + b) * 3 * H, E0 + (b0 + b + 1) * 3 * H, &scratch[b * SH]);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t q = t % steps_per_chunk;
      if (q == 0) {  // the chunk's input products: its x rows gathered, one GEMM
        const int64_t steps = std::min(steps_per_chunk, T - t);
        for (int64_t i = 0; i < steps; ++i)
          std::copy(X + ((t + i) * B + b0) * I, X + ((t + i) * B + b1) * I, &xc[i * nb * I]);
        r_ih.apply(steps * nb, xc.data(), I, pre.data(), ld, false);
      }
      // h_{t-1}: training keeps all of them in hs (hs[0] = h0); inference reads the last output
      const scalar_t* h_prev =
          kTrain ? HS + (t * B + b0) * H : (t == 0 ? H0 + b0 * H : HS + ((t - 1) * B + b0) * H);
      scalar_t* h_new = HS + ((kTrain ? t + 1 : t) * B + b0) * H;
      scalar_t* c_prev = Cell::kHasCell ? CS + ((kTrain ? t : 0) * B + b0) * H : nullptr;
      scalar_t* c_new = Cell::kHasCell ? CS + ((kTrain ? t + 1 : 0) * B + b0) * H : nullptr;
      scalar_t* s_new = kTrain ? S + (t * B + b0) * SH : scratch.data();
      r_hh.apply(nb, h_prev, H, rec.data(), ld, false);
      if constexpr (Cell::kHasGateRecurrence) {  // (i, f, o)_{t-1} W_ggᵀ
        if (!kTrain)
          r_gg.apply(nb, scratch.data(), SH, rg.data(), ld_e, false);
        else if (t > 0)
          r_gg.apply(nb, S + ((t - 1) * B + b0) * SH, SH, rg.data(), ld_e, false);
        else if (E0)
          r_gg.apply(nb, E0 + b0 * E, E, rg.data(), ld_e, false);  // else zeros, as rg starts
      }
      for (int64_t b = 0; b < nb; ++b) {
        StepRow<scalar_t> row{pre.data() + (q * nb + b) * ld,
                              rec.data() + b * ld,
                              rg.data() + b * ld_e,
                              BIAS,
                              RB,
                              h_prev + b * H,
                              c_prev ? c_prev + b * H : nullptr,
                              h_new + b * H,
                              c_new ? c_new + b * H : nullptr,
                              s_new + b * SH,
                              PEEP};
        Cell::forward(row, H);
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
std::vector<at::Tensor> forward(int64_t code, at::Tensor x, at::Tensor h0, at::Tensor c0, at::Tensor e0,
                                at::Tensor w_ih, at::Tensor w_hh, at::Tensor b_ih, at::Tensor b_hh,
                                at::Tensor w_gg, at::Tensor peep, bool train) {
  x = x.contiguous(), h0 = h0.contiguous(), w_ih = w_ih.contiguous(), w_hh = w_hh.contiguous();
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
                  peep};
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
};

// The backward loop, from t = T-1 down to 0, per batch slice. Per step: the cell's backward (δa of every
// row), then ∂L/∂h_{t-1} = δa W_hh (+ FGR's δe_{t-1} = δa W_gg); every few steps, for the chunk's rows while
// they are in cache, ∂L/∂x = δa W_ih and the weight gradients' share Σ δaᵀ [x | h_{t-1} | (i, f, o)_{t-1}],
// into the slice's own partial sums (δa is never written out whole). The partial sums of the
// slices are added in slice order afterwards, so results do not depend on thread timing.
// Returns {∂L/∂x, ∂L/∂h0, ∂L/∂c0, ∂L/∂W_ih, ∂L/∂W_hh, ∂L/∂b_ih, ∂L/∂b_hh, ∂L/∂W_gg, ∂L/∂p}, empty if none.
template <class Cell, typename scalar_t>
std::vector<at::Tensor> backward_loop(const BackwardArgs& a) {
  namespace sg = small_gemm;
  const int64_t T = a.grad_out.size(0), B = a.grad_out.size(1), H = a.grad_out.size(2), I = a.x.size(2);
  const int64_t GH = Cell::kGates * H, SH = Cell::kSaved * H, E = Cell::kHasGateRecurrence ? 3 * H : 0;
  const bool FGR = Cell::kHasGateRecurrence, PH = a.peep.numel() > 0, gx_on = a.need_grad_x;
  const auto opt = a.grad_out.options();
  // B operands of the per-step products: W_hh (K = G H, N = H), W_ih (N = I), W_gg (N = 3H), row-major
  auto packed = [&](const at::Tensor& w, int64_t N) {  // all G H rows
    at::Tensor out = at::empty({sg::packed_size<scalar_t>(GH, N)}, opt);
    sg::pack<scalar_t>(w.data_ptr<scalar_t>(), GH, N, N, 1, out.data_ptr<scalar_t>());
    return out;
  };
  const at::Tensor p_hh = packed(a.w_hh, H), p_ih = gx_on ? packed(a.w_ih, I) : at::Tensor();
  // FGR: δe = (δa_i, δa_f) W_gg[0:2H] + δa_o W_gg[2H:3H] (the g block has no gate recurrence)
  at::Tensor p_gg_if, p_gg_o;
  if (FGR) {
    p_gg_if = at::empty({sg::packed_size<scalar_t>(2 * H, E)}, opt);
    p_gg_o = at::empty({sg::packed_size<scalar_t>(H, E)}, opt);
    sg::pack<scalar_t>(a.w_gg.data_ptr<scalar_t>(), 2 * H, E, E, 1, p_gg_if.data_ptr<scalar_t>());
    sg::pack<scalar_t>(a.w_gg.data_ptr<scalar_t>() + 2 * H * E, H, E, E, 1, p_gg_o.data_ptr<scalar_t>());
  }
  at::Tensor grad_x = gx_on ? at::empty({T, B, I}, opt) : at::empty({0}, opt);
  at::Tensor grad_h0 = at::empty({B, H}, opt);
  at::Tensor grad_c0 = Cell::kHasCell ? a.grad_cn.clone() : at::empty({0}, opt);  // carried in place
  // each slice's partial sums: ∂W_ih, ∂W_hh, ∂W_gg (padded columns), ∂b_ih, ∂b_hh (GRU), ∂p
  const int64_t ld_i = sg::padded<scalar_t>(I), ld_h = sg::padded<scalar_t>(H),
                ld_e = sg::padded<scalar_t>(E);
  const int64_t o_hh = GH * ld_i, o_gg = o_hh + GH * ld_h, o_b = o_gg + (FGR ? GH * ld_e : 0),
                o_bh = o_b + GH;
  const int64_t o_p = o_bh + GH, n_partial = o_p + 3 * H;
  std::vector<std::vector<scalar_t>> partial(slice_count(B));

  const scalar_t *GO = a.grad_out.data_ptr<scalar_t>(), *GHN = a.grad_hn.data_ptr<scalar_t>();
  const scalar_t *X = a.x.data_ptr<scalar_t>(), *HS = a.hs.data_ptr<scalar_t>(), *CS = ptr<scalar_t>(a.cs);
  const scalar_t *S = a.saved.data_ptr<scalar_t>(), *PEEP = ptr<scalar_t>(a.peep);
  const scalar_t *WHH = p_hh.data_ptr<scalar_t>(), *WIH = gx_on ? p_ih.data_ptr<scalar_t>() : nullptr;
  const scalar_t *WGG_IF = FGR ? p_gg_if.data_ptr<scalar_t>() : nullptr,
                 *WGG_O = FGR ? p_gg_o.data_ptr<scalar_t>() : nullptr;
  scalar_t *GX = gx_on ? grad_x.data_ptr<scalar_t>() : nullptr, *GH0 = grad_h0.data_ptr<scalar_t>();
  scalar_t* DC = Cell::kHasCell ? grad_c0.data_ptr<scalar_t>() : nullptr;

  for_each_slice(B, [&](int64_t slice, int64_t b0, int64_t b1) {
    const int64_t nb = b1 - b0, steps_per_chunk = std::max<int64_t>(1, kChunkRows / nb),
                  K_max = steps_per_chunk * nb;
    std::vector<scalar_t>& acc = partial[slice];
    acc.assign(n_partial, scalar_t(0));
    std::vector<scalar_t> dh(nb * ld_h), de(nb * ld_e), gx(gx_on ? K_max * ld_i : 0), zeros(E);
    std::vector<scalar_t> d_pre(K_max * GH), d_rec(Cell::kDirectHiddenGrad ? K_max * GH : 0);
    std::vector<scalar_t> xp(sg::packed_size<scalar_t>(K_max, I)), hp(sg::packed_size<scalar_t>(K_max, H));
    std::vector<scalar_t> ep(FGR ? sg::packed_size<scalar_t>(K_max, E) : 0);
    std::vector<scalar_t> ap(sg::packed_columns_size<scalar_t>(GH, K_max));
    scalar_t* DR = Cell::kDirectHiddenGrad ? d_rec.data() : d_pre.data();
    for (int64_t b = 0; b < nb; ++b) std::copy(GHN + (b0 + b) * H, GHN + (b0 + b + 1) * H, &dh[b * ld_h]);

    // the chunk's rows k = q nb + b belong to step t_first - q, batch row b0 + b
    auto flush = [&](int64_t t_first, int64_t K) {
      auto row = [&](int64_t k) { return (t_first - k / nb) * B + b0 + k % nb; };
      if (gx_on) {  // ∂L/∂x = δa W_ih
        sg::gemm<scalar_t>(K, I, GH, d_pre.data(), GH, WIH, gx.data(), ld_i, false);
        for (int64_t k = 0; k < K; ++k) std::copy(&gx[k * ld_i], &gx[k * ld_i] + I, GX + row(k) * I);
      }
      sg::pack_rows<scalar_t>(K, I, [&](int64_t k) { return X + row(k) * I; }, xp.data());
      sg::pack_rows<scalar_t>(
          K, H, [&](int64_t k) { return HS + row(k) * H; }, hp.data());  // hs[t] = h_{t-1}
      sg::pack_columns<scalar_t>(GH, K, [&](int64_t k) { return d_pre.data() + k * GH; }, ap.data());
      sg::gemm_packed<scalar_t>(GH, I, K, ap.data(), xp.data(), acc.data(), ld_i, true);
      if (Cell::kDirectHiddenGrad)
        sg::pack_columns<scalar_t>(GH, K, [&](int64_t k) { return DR + k * GH; }, ap.data());
      sg::gemm_packed<scalar_t>(GH, H, K, ap.data(), hp.data(), acc.data() + o_hh, ld_h, true);
      if (FGR) {  // (i, f, o)_{t-1}: the first 3H of step t-1's saved row; zeros before the first step
        sg::pack_rows<scalar_t>(
            K, E, [&](int64_t k) { return row(k) >= B ? S + (row(k) - B) * SH : zeros.data(); }, ep.data());
        sg::gemm_packed<scalar_t>(GH, E, K, ap.data(), ep.data(), acc.data() + o_gg, ld_e, true);
      }
      for (int64_t k = 0; k < K; ++k) {
        scalar_t *db = acc.data() + o_b, *dbh = acc.data() + o_bh;
        const scalar_t *dp = d_pre.data() + k * GH, *dr = DR + k * GH;
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
      scalar_t *dp = d_pre.data() + q * nb * GH, *dr = DR + q * nb * GH;
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t row = t * B + b0 + b;
        GradRow<scalar_t> g{GO + row * H,
                            &dh[b * ld_h],
                            DC ? DC + (b0 + b) * H : nullptr,
                            FGR ? &de[b * ld_e] : nullptr,
                            S + row * SH,
                            HS + row * H,
                            CS ? CS + row * H : nullptr,
                            CS ? CS + row * H + B * H : nullptr,
                            dp + b * GH,
                            dr + b * GH,
                            PEEP,
                            acc.data() + o_p};
        Cell::backward(g, H);
      }
      sg::gemm<scalar_t>(nb, H, GH, dr, GH, WHH, dh.data(), ld_h, Cell::kDirectHiddenGrad);  // ∂L/∂h_{t-1}
      if (FGR && t > 0) {  // ∂L/∂(i, f, o)_{t-1}
        sg::gemm<scalar_t>(nb, E, 2 * H, dp, GH, WGG_IF, de.data(), ld_e, false);
        sg::gemm<scalar_t>(nb, E, H, dp + 3 * H, GH, WGG_O, de.data(), ld_e, true);
      }
      if (++q == steps_per_chunk || t == 0) {
        flush(t_first, q * nb);
        q = 0;
      }
    }
    for (int64_t b = 0; b < nb; ++b) std::copy(&dh[b * ld_h], &dh[b * ld_h] + H, GH0 + (b0 + b) * H);
  });

  // the slices' partial sums, added in slice order, into unpadded tensors
  auto total = [&](int64_t offset, int64_t rows, int64_t cols, int64_t ld) {
    at::Tensor out = at::zeros({rows, cols}, opt);
    scalar_t* o = out.data_ptr<scalar_t>();
    for (const auto& acc : partial)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) o[r * cols + c] += acc[offset + r * ld + c];
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
                                 bool need_grad_x) {
  BackwardArgs a{grad_out.contiguous(),
                 grad_hn.contiguous(),
                 grad_cn.contiguous(),
                 x.contiguous(),
                 hs,
                 cs,
                 saved,
                 w_ih.contiguous(),
                 w_hh.contiguous(),
                 w_gg.contiguous(),
                 peep.contiguous(),
                 need_grad_x};
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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("parallel_threads", &parallel_threads, "threads at::parallel_for uses for n tasks in this build");
  m.def("forward", &forward, "recurrent layer forward (time-major; training or inference kernel)");
  m.def("backward", &backward, "recurrent layer backward (hand-derived BPTT): every gradient of the layer");
}
