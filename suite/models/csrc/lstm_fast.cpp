// Fast CPU path of the LSTM family and GRU: one compiled time loop, parametrised by the cell's
// equations (a Cell type below), with a hand-derived backward. lstm_fast.py wraps it in an
// autograd.Function; suite/models/lstm.py and gru_minlstm.py are the readable definitions and the
// oracles the tests compare against.
//
// One layer, time-major. The input projection of all steps is one large GEMM before the loop
// (pre = x W_ihᵀ + bias, done here with ATen, multi-threaded); the weight gradients are large GEMMs after
// the backward loop (in lstm_fast.py). Inside the loops only what is sequential remains: per step one
// product with the recurrent weights (small_gemm.h, weights packed once per call) and the fused
// pointwise gate math of each batch row.
//
// Parallelism: the rows of a batch are independent sequences, so each thread runs the whole time loop
// for its own slice of the batch, with no barrier between steps.
//
// Two forward kernels: the training one keeps every step's h, c and gate activations for the backward;
// the inference one (no_grad) keeps only what the next step reads. A sequence of one step (decoding)
// skips the weight packing, which would cost more than the step.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "small_gemm.h"

namespace {

// ---- cells: the pointwise equations of one batch row at one step, and their derivatives -------------

// Variant flags, as lstm_fast.py's cell_code() computes them from suite.models.lstm.Variant.
enum : int64_t {
  kInputGate = 1, kForgetGate = 2, kOutputGate = 4, kInputActivation = 8, kOutputActivation = 16,
  kPeepholes = 32, kCoupled = 64, kGateRecurrence = 128,
  kGru = 1024,
};

template <typename scalar_t> inline scalar_t sigmoid(scalar_t x) { return scalar_t(1) / (scalar_t(1) + std::exp(-x)); }

// One batch row at one forward step (pointers to that row; blocks of H values).
template <typename scalar_t> struct StepRow {
  const scalar_t* pre;       // x_t W_ihᵀ + bias, one block per gate with weights
  const scalar_t* rec;       // h_{t-1} W_hhᵀ (+ (i, f, o)_{t-1} W_ggᵀ), the same blocks
  const scalar_t* h_prev;
  const scalar_t* c_prev;
  scalar_t* h;
  scalar_t* c;
  scalar_t* saved;           // what the backward reads (Cell::kSaved blocks)
  const scalar_t* peep;      // (3, H): p_i, p_f, p_o, zero where a gate has none
  const scalar_t* rec_bias;  // GRU's b_hh
};

// One batch row at one backward step.
template <typename scalar_t> struct GradRow {
  const scalar_t* grad_out;  // ∂L/∂h_t from the layer's output
  scalar_t* dh;              // in: ∂L/∂h_t through step t+1; out (GRU): the part of ∂L/∂h_{t-1} not through W_hh
  scalar_t* dc;              // in: ∂L/∂c_t through step t+1; out: ∂L/∂c_{t-1}
  const scalar_t* de;        // FGR: ∂L/∂(i, f, o)_t through step t+1
  const scalar_t* saved;
  const scalar_t* h_prev;
  const scalar_t* c_prev;
  const scalar_t* c;
  scalar_t* d_pre;           // ∂L/∂(gate pre-activations)
  scalar_t* d_rec;           // GRU: ∂L/∂(h_{t-1} W_hhᵀ + b_hh); the same row as d_pre otherwise
  const scalar_t* peep;
};

// The LSTM family (suite/models/lstm.py), gate blocks in nn.LSTM's order (i, f, g, o) minus dropped gates:
//   i = σ(a_i + p_i c_{t-1})   f = σ(a_f + p_f c_{t-1})   z = g(a_z)   c = f c_{t-1} + i z
//   o = σ(a_o + p_o c)         h = o h(c)                 a = pre + rec (bias folded into pre)
// A dropped gate is 1 (NIG, NFG, NOG), CIFG has f = 1 - i, NIAF g(z) = z, NOAF h(c) = c, FGR adds
// (i, f, o)_{t-1} W_ggᵀ to rec (a second product in the loop). Saved: i, f, o, z, h(c).
//
// Backward of one step, given δh = ∂L/∂h_t (output + step t+1), δc = ∂L/∂c_t through c_{t+1}, and for
// FGR δe = ∂L/∂(i, f, o)_t through step t+1's gate recurrence:
//   δo   = δh h(c) + δe_o                 δa_o = δo o(1 − o)
//   δc  += δh o h'(c) + δa_o p_o           h'(c) = 1 − h(c)² (tanh) or 1 (NOAF); p_o: o peeks at c_t
//   δi   = δc z + δe_i   δf = δc c_{t-1} + δe_f   δz = δc i
//   δa_i = δi i(1 − i)   δa_f = δf f(1 − f)   δa_z = δz g'(a_z)    (g' = 1 − z² or 1 for NIAF)
//   CIFG: f = 1 − i, so δa_i = (δi − δf) i(1 − i) and there is no δa_f
//   ∂L/∂c_{t-1} = δc f + δa_i p_i + δa_f p_f
// then ∂L/∂h_{t-1} = δa W_hh and δe_{t-1} = δa W_gg (products in the loop); after the loop
// ∂L/∂W = Σ_t δa_tᵀ [x_t | h_{t-1} | (i, f, o)_{t-1}], ∂L/∂p_i = Σ δa_i c_{t-1}, ∂L/∂p_f = Σ δa_f c_{t-1},
// ∂L/∂p_o = Σ δa_o c_t (lstm_fast.py).
template <int64_t kCode> struct LstmCell {
  static constexpr bool IG = kCode & kInputGate, CIFG = kCode & kCoupled, FG = (kCode & kForgetGate) && !CIFG;
  static constexpr bool OG = kCode & kOutputGate, IA = kCode & kInputActivation, OA = kCode & kOutputActivation;
  static constexpr bool PH = kCode & kPeepholes, FGR = kCode & kGateRecurrence;
  static constexpr int kI = 0, kF = IG, kZ = IG + FG, kO = IG + FG + 1;  // block of each gate
  static constexpr int kGates = IG + FG + 1 + OG;
  static constexpr int kSaved = 5;                                      // i, f, o, z, h(c)
  static constexpr bool kHasCell = true, kHasGateRecurrence = FGR, kDirectHiddenGrad = false, kRecurrentBias = false;

  template <typename scalar_t> static void forward(const StepRow<scalar_t>& r, int64_t H) {
    const scalar_t *pre = r.pre, *rec = r.rec, *cp = r.c_prev, *p = r.peep;
    scalar_t *s = r.saved, *c_out = r.c, *h_out = r.h;
    _Pragma("omp simd")
    for (int64_t j = 0; j < H; ++j) {
      const scalar_t c_prev = cp[j];
      scalar_t i = 1, f = 1, o = 1;
      if constexpr (IG) {
        scalar_t a = pre[kI * H + j] + rec[kI * H + j];
        if constexpr (PH) a += p[j] * c_prev;
        i = sigmoid(a);
      }
      if constexpr (CIFG) {
        f = 1 - i;
      } else if constexpr (FG) {
        scalar_t a = pre[kF * H + j] + rec[kF * H + j];
        if constexpr (PH) a += p[H + j] * c_prev;
        f = sigmoid(a);
      }
      const scalar_t a_z = pre[kZ * H + j] + rec[kZ * H + j];
      const scalar_t z = IA ? std::tanh(a_z) : a_z;
      const scalar_t c = f * c_prev + i * z;
      if constexpr (OG) {
        scalar_t a = pre[kO * H + j] + rec[kO * H + j];
        if constexpr (PH) a += p[2 * H + j] * c;
        o = sigmoid(a);
      }
      const scalar_t hc = OA ? std::tanh(c) : c;
      c_out[j] = c;
      h_out[j] = o * hc;
      s[j] = i; s[H + j] = f; s[2 * H + j] = o; s[3 * H + j] = z; s[4 * H + j] = hc;
    }
  }

  template <typename scalar_t> static void backward(const GradRow<scalar_t>& g, int64_t H) {
    const scalar_t *s = g.saved, *go = g.grad_out, *cp = g.c_prev, *p = g.peep, *de = g.de;
    scalar_t *dh = g.dh, *dc = g.dc, *d = g.d_pre;
    _Pragma("omp simd")
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
      if constexpr (CIFG) da_i = (delta_i - delta_f) * i * (1 - i);
      else if constexpr (IG) da_i = delta_i * i * (1 - i);
      if constexpr (FG) da_f = delta_f * f * (1 - f);
      const scalar_t da_z = IA ? delta_z * (1 - z * z) : delta_z;
      scalar_t dc_prev = delta_c * f;
      if constexpr (PH) {
        if constexpr (IG) dc_prev += da_i * p[j];
        if constexpr (FG) dc_prev += da_f * p[H + j];
      }
      dc[j] = dc_prev;
      if constexpr (IG) d[kI * H + j] = da_i;
      if constexpr (FG) d[kF * H + j] = da_f;
      d[kZ * H + j] = da_z;
      if constexpr (OG) d[kO * H + j] = da_o;
    }
  }
};

// GRU (suite/models/gru_minlstm.py, nn.GRU's layout), gate blocks (r, z, n), pre = x W_ihᵀ + b_ih and
// rec = h_{t-1} W_hhᵀ (b_hh added here, since the reset gate multiplies only the recurrent part of n):
//   r = σ(pre_r + rec_r + b_hr)   z = σ(pre_z + rec_z + b_hz)   R_n = rec_n + b_hn
//   n = tanh(pre_n + r R_n)       h = (1 − z) n + z h_{t-1}      Saved: r, z, n, R_n.
// Backward, given δh = ∂L/∂h_t:
//   δn = δh (1 − z)   δz = δh (h_{t-1} − n)   δa_n = δn (1 − n²)   δR_n = δa_n r   δr = δa_n R_n
//   δa_r = δr r(1 − r)   δa_z = δz z(1 − z)
//   d_pre = (δa_r, δa_z, δa_n) (the input side), d_rec = (δa_r, δa_z, δR_n) (the recurrent side)
//   ∂L/∂h_{t-1} = δh z + d_rec W_hh (the first term here, the product in the loop)
// after the loop ∂L/∂W_ih = Σ d_preᵀ x, ∂L/∂b_ih = Σ d_pre, ∂L/∂W_hh = Σ d_recᵀ h_{t-1}, ∂L/∂b_hh = Σ d_rec.
struct GruCell {
  static constexpr int kGates = 3, kSaved = 4;
  static constexpr bool kHasCell = false, kHasGateRecurrence = false, kDirectHiddenGrad = true, kRecurrentBias = true;

  template <typename scalar_t> static void forward(const StepRow<scalar_t>& r, int64_t H) {
    const scalar_t *pre = r.pre, *rec = r.rec, *b = r.rec_bias, *hp = r.h_prev;
    scalar_t *s = r.saved, *h_out = r.h;
    _Pragma("omp simd")
    for (int64_t j = 0; j < H; ++j) {
      const scalar_t rg = sigmoid(pre[j] + rec[j] + b[j]);
      const scalar_t z = sigmoid(pre[H + j] + rec[H + j] + b[H + j]);
      const scalar_t rn = rec[2 * H + j] + b[2 * H + j];
      const scalar_t n = std::tanh(pre[2 * H + j] + rg * rn);
      h_out[j] = (1 - z) * n + z * hp[j];
      s[j] = rg; s[H + j] = z; s[2 * H + j] = n; s[3 * H + j] = rn;
    }
  }

  template <typename scalar_t> static void backward(const GradRow<scalar_t>& g, int64_t H) {
    const scalar_t *s = g.saved, *go = g.grad_out, *hp = g.h_prev;
    scalar_t *dh = g.dh, *d = g.d_pre, *dr = g.d_rec;
    _Pragma("omp simd")
    for (int64_t j = 0; j < H; ++j) {
      const scalar_t rg = s[j], z = s[H + j], n = s[2 * H + j], rn = s[3 * H + j];
      const scalar_t delta_h = dh[j] + go[j];
      const scalar_t da_n = delta_h * (1 - z) * (1 - n * n);
      const scalar_t da_r = da_n * rn * rg * (1 - rg);
      const scalar_t da_z = delta_h * (hp[j] - n) * z * (1 - z);
      d[j] = da_r; d[H + j] = da_z; d[2 * H + j] = da_n;
      dr[j] = da_r; dr[H + j] = da_z; dr[2 * H + j] = da_n * rg;
      dh[j] = delta_h * z;
    }
  }
};

// Calls f(Cell{}) with the cell of this code (one compiled loop per cell: the flags are constants there).
template <class F> void with_cell(int64_t code, F&& f) {
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

// Batch rows per thread: split evenly over the threads, at least 4 rows each.
int64_t rows_per_chunk(int64_t B) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  return std::max<int64_t>(4, (B + threads - 1) / threads);
}

template <typename scalar_t> const scalar_t* ptr(const at::Tensor& t) {
  return t.defined() && t.numel() ? t.data_ptr<scalar_t>() : nullptr;
}

// The recurrent weights as one step's product needs them: packed for a sequence, as they are for one step.
template <typename scalar_t> struct Recurrent {
  const scalar_t* w;   // W (N x K) row-major, or its packed transpose
  int64_t N, K;
  bool packed;

  Recurrent(const at::Tensor& weight, bool pack, at::Tensor& storage) : N(weight.size(0)), K(weight.size(1)), packed(pack) {
    w = weight.data_ptr<scalar_t>();
    if (pack) {  // Wᵀ (K x N): element (k, n) = W[n, k]
      storage = at::empty({small_gemm::packed_size<scalar_t>(K, N)}, weight.options());
      small_gemm::pack<scalar_t>(w, K, N, 1, K, storage.data_ptr<scalar_t>());
      w = storage.data_ptr<scalar_t>();
    }
  }
  // C (M x N) (+)= A (M x K) Wᵀ
  void apply(int64_t M, const scalar_t* a, int64_t lda, scalar_t* c, int64_t ldc, bool accumulate) const {
    if (packed) small_gemm::gemm<scalar_t>(M, N, K, a, lda, w, c, ldc, accumulate);
    else small_gemm::gemm_unpacked<scalar_t>(M, N, K, a, lda, w, K, c, ldc, accumulate);
  }
};

// Training forward: hs (T+1, B, H), cs (T+1, B, H) (cells with c), saved (T, B, kSaved H), step 0 from
// h0, c0, e0. Inference forward: out (T, B, H); c_n and e_n updated in place, saved in a scratch row.
template <class Cell, typename scalar_t, bool kTrain>
void forward_loop(const at::Tensor& pre, const at::Tensor& h0, const at::Tensor& e0, const at::Tensor& w_hh,
                  const at::Tensor& w_gg, const at::Tensor& peep, const at::Tensor& rec_bias, at::Tensor& hs,
                  at::Tensor& cs, at::Tensor& saved) {
  const int64_t T = pre.size(0), B = pre.size(1), H = h0.size(1), GH = Cell::kGates * H, SH = Cell::kSaved * H;
  const int64_t ld_rec = small_gemm::padded<scalar_t>(GH);
  at::Tensor packed_hh, packed_gg;
  const Recurrent<scalar_t> r_hh(w_hh, T > 1, packed_hh);
  const Recurrent<scalar_t> r_gg = Cell::kHasGateRecurrence ? Recurrent<scalar_t>(w_gg, T > 1, packed_gg) : r_hh;
  const scalar_t *P = pre.data_ptr<scalar_t>(), *PEEP = ptr<scalar_t>(peep), *RB = ptr<scalar_t>(rec_bias);
  const scalar_t *H0 = h0.data_ptr<scalar_t>(), *E0 = ptr<scalar_t>(e0);
  scalar_t *HS = hs.data_ptr<scalar_t>(), *CS = Cell::kHasCell ? cs.data_ptr<scalar_t>() : nullptr;
  scalar_t* S = kTrain ? saved.data_ptr<scalar_t>() : nullptr;
  at::parallel_for(0, B, rows_per_chunk(B), [&](int64_t b0, int64_t b1) {
    const int64_t nb = b1 - b0;
    std::vector<scalar_t> rec(nb * ld_rec), scratch(kTrain ? 0 : nb * SH);
    if (!kTrain && Cell::kHasGateRecurrence && E0)  // the scratch row holds (i, f, o)_{t-1} in its first 3H
      for (int64_t b = 0; b < nb; ++b) std::copy(E0 + (b0 + b) * 3 * H, E0 + (b0 + b + 1) * 3 * H, &scratch[b * SH]);
    for (int64_t t = 0; t < T; ++t) {
      // h_{t-1}: training keeps all of them in hs (hs[0] = h0); inference reads the last output
      const scalar_t* h_prev = kTrain ? HS + (t * B + b0) * H : (t == 0 ? H0 + b0 * H : HS + ((t - 1) * B + b0) * H);
      scalar_t* h_new = HS + ((kTrain ? t + 1 : t) * B + b0) * H;
      scalar_t* c_prev = Cell::kHasCell ? CS + ((kTrain ? t : 0) * B + b0) * H : nullptr;
      scalar_t* c_new = Cell::kHasCell ? CS + ((kTrain ? t + 1 : 0) * B + b0) * H : nullptr;
      scalar_t* s_new = kTrain ? S + (t * B + b0) * SH : scratch.data();
      r_hh.apply(nb, h_prev, H, rec.data(), ld_rec, false);
      if constexpr (Cell::kHasGateRecurrence) {  // + (i, f, o)_{t-1} W_ggᵀ
        if (!kTrain) r_gg.apply(nb, scratch.data(), SH, rec.data(), ld_rec, true);
        else if (t > 0) r_gg.apply(nb, S + ((t - 1) * B + b0) * SH, SH, rec.data(), ld_rec, true);
        else if (E0) r_gg.apply(nb, E0 + b0 * 3 * H, 3 * H, rec.data(), ld_rec, true);
      }
      for (int64_t b = 0; b < nb; ++b) {
        StepRow<scalar_t> row{P + (t * B + b0 + b) * GH, rec.data() + b * ld_rec, h_prev + b * H,
                              c_prev ? c_prev + b * H : nullptr, h_new + b * H, c_new ? c_new + b * H : nullptr,
                              s_new + b * SH, PEEP, RB};
        Cell::forward(row, H);
      }
    }
    if (!kTrain && Cell::kHasGateRecurrence)
      for (int64_t b = 0; b < nb; ++b)
        std::copy(&scratch[b * SH], &scratch[b * SH] + 3 * H, saved.data_ptr<scalar_t>() + (b0 + b) * 3 * H);
  });
}

// pre = x W_ihᵀ + bias for all steps: one multi-threaded GEMM; for one step, the unpacked kernel.
at::Tensor input_projection(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& bias) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), GH = w_ih.size(0);
  if (T > 1) return at::addmm(bias, x.reshape({T * B, I}), w_ih.t()).view({T, B, GH});
  auto pre = bias.expand({T, B, GH}).contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_fast_input_projection", [&] {
    small_gemm::gemm_unpacked<scalar_t>(B, GH, I, x.data_ptr<scalar_t>(), I, w_ih.data_ptr<scalar_t>(), I,
                                        pre.data_ptr<scalar_t>(), GH, true);
  });
  return pre;
}

}  // namespace

// x (T, B, I); h0, c0 (B, H); e0 (B, 3H): FGR's (i, f, o) before the first step (empty: zeros);
// w_gg (4H, 3H): FGR's W_gg with a zero block for g; peep (3, H): p_i, p_f, p_o (empty: none).
// train: returns {hs (T+1, B, H), cs (T+1, B, H), saved (T, B, S H)}, outputs = hs[1:];
// else: returns {out (T, B, H), c_n (B, H), e_n (B, 3H)}, h_n = out[-1].
std::vector<at::Tensor> forward(int64_t code, at::Tensor x, at::Tensor h0, at::Tensor c0, at::Tensor e0,
                                at::Tensor w_ih, at::Tensor w_hh, at::Tensor b_ih, at::Tensor b_hh, at::Tensor w_gg,
                                at::Tensor peep, bool train) {
  x = x.contiguous(), h0 = h0.contiguous(), w_ih = w_ih.contiguous(), w_hh = w_hh.contiguous();
  c0 = c0.defined() ? c0.contiguous() : c0, e0 = e0.defined() ? e0.contiguous() : e0;
  w_gg = w_gg.defined() ? w_gg.contiguous() : w_gg, peep = peep.defined() ? peep.contiguous() : peep;
  const int64_t T = x.size(0), B = x.size(1), H = h0.size(1);
  std::vector<at::Tensor> result;
  with_cell(code, [&](auto cell) {
    using Cell = decltype(cell);
    // the LSTM's biases enter as their sum; GRU's b_hh stays with the recurrent product (r scales it)
    auto pre = input_projection(x, w_ih, Cell::kRecurrentBias ? b_ih : b_ih + b_hh);
    at::Tensor rec_bias = Cell::kRecurrentBias ? b_hh.contiguous() : at::Tensor();
    at::Tensor hs, cs = at::empty({0}, x.options()), saved = at::empty({0}, x.options());
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
      if (train) forward_loop<Cell, scalar_t, true>(pre, h0, e0, w_hh, w_gg, peep, rec_bias, hs, cs, saved);
      else forward_loop<Cell, scalar_t, false>(pre, h0, e0, w_hh, w_gg, peep, rec_bias, hs, cs, saved);
    });
    result = {hs, cs, saved};
  });
  return result;
}

// The backward loop. Returns {d_pre (T, B, G H), d_rec (the same tensor except for GRU), ∂L/∂h0, ∂L/∂c0}.
std::vector<at::Tensor> backward(int64_t code, at::Tensor grad_out, at::Tensor grad_hn, at::Tensor grad_cn,
                                 at::Tensor hs, at::Tensor cs, at::Tensor saved, at::Tensor w_hh, at::Tensor w_gg,
                                 at::Tensor peep) {
  grad_out = grad_out.contiguous(), grad_hn = grad_hn.contiguous(), w_hh = w_hh.contiguous();
  w_gg = w_gg.contiguous(), peep = peep.contiguous();
  const int64_t T = grad_out.size(0), B = grad_out.size(1), H = grad_out.size(2);
  std::vector<at::Tensor> result;
  with_cell(code, [&](auto cell) {
    using Cell = decltype(cell);
    const int64_t GH = Cell::kGates * H, SH = Cell::kSaved * H;
    auto d_pre = at::empty({T, B, GH}, grad_out.options());
    at::Tensor d_rec = Cell::kDirectHiddenGrad ? at::empty_like(d_pre) : d_pre;
    auto grad_h0 = at::empty({B, H}, grad_out.options());
    at::Tensor grad_c0 = Cell::kHasCell ? grad_cn.contiguous().clone() : at::empty({0}, grad_out.options());  // in place
    AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "lstm_fast_backward", [&] {
      // B operands: W_hh itself (K = G H, N = H) and W_gg (K = 4H, N = 3H), row-major
      const int64_t ld_dh = small_gemm::padded<scalar_t>(H), ld_de = small_gemm::padded<scalar_t>(3 * H);
      auto packed_hh = at::empty({small_gemm::packed_size<scalar_t>(GH, H)}, w_hh.options());
      small_gemm::pack<scalar_t>(w_hh.data_ptr<scalar_t>(), GH, H, H, 1, packed_hh.data_ptr<scalar_t>());
      at::Tensor packed_gg;
      if (Cell::kHasGateRecurrence) {
        packed_gg = at::empty({small_gemm::packed_size<scalar_t>(GH, 3 * H)}, w_gg.options());
        small_gemm::pack<scalar_t>(w_gg.data_ptr<scalar_t>(), GH, 3 * H, 3 * H, 1, packed_gg.data_ptr<scalar_t>());
      }
      const scalar_t *GO = grad_out.data_ptr<scalar_t>(), *GHN = grad_hn.data_ptr<scalar_t>();
      const scalar_t *HS = hs.data_ptr<scalar_t>(), *CS = ptr<scalar_t>(cs), *S = saved.data_ptr<scalar_t>();
      const scalar_t *PEEP = ptr<scalar_t>(peep), *WHH = packed_hh.data_ptr<scalar_t>(), *WGG = ptr<scalar_t>(packed_gg);
      scalar_t *DP = d_pre.data_ptr<scalar_t>(), *DR = d_rec.data_ptr<scalar_t>();
      scalar_t* DC = Cell::kHasCell ? grad_c0.data_ptr<scalar_t>() : nullptr;
      scalar_t* GH0 = grad_h0.data_ptr<scalar_t>();
      at::parallel_for(0, B, rows_per_chunk(B), [&](int64_t b0, int64_t b1) {
        const int64_t nb = b1 - b0;
        std::vector<scalar_t> dh(nb * ld_dh), de(Cell::kHasGateRecurrence ? nb * ld_de : 0);
        for (int64_t b = 0; b < nb; ++b) std::copy(GHN + (b0 + b) * H, GHN + (b0 + b + 1) * H, &dh[b * ld_dh]);
        for (int64_t t = T - 1; t >= 0; --t) {
          for (int64_t b = 0; b < nb; ++b) {
            const int64_t row = t * B + b0 + b;
            GradRow<scalar_t> g{GO + row * H, &dh[b * ld_dh], DC ? DC + (b0 + b) * H : nullptr,
                                de.empty() ? nullptr : &de[b * ld_de], S + row * SH, HS + row * H,
                                CS ? CS + row * H : nullptr, CS ? CS + row * H + B * H : nullptr,
                                DP + row * GH, DR + row * GH, PEEP};
            Cell::backward(g, H);
          }
          // ∂L/∂h_{t-1} (+)= d_rec W_hh ; FGR: ∂L/∂(i, f, o)_{t-1} = d_pre W_gg
          const int64_t row0 = t * B + b0;
          small_gemm::gemm<scalar_t>(nb, H, GH, DR + row0 * GH, GH, WHH, dh.data(), ld_dh, Cell::kDirectHiddenGrad);
          if (Cell::kHasGateRecurrence && t > 0)
            small_gemm::gemm<scalar_t>(nb, 3 * H, GH, DP + row0 * GH, GH, WGG, de.data(), ld_de, false);
        }
        for (int64_t b = 0; b < nb; ++b) std::copy(&dh[b * ld_dh], &dh[b * ld_dh] + H, GH0 + (b0 + b) * H);
      });
    });
    result = {d_pre, d_rec, grad_h0, grad_c0};
  });
  return result;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "recurrent layer forward (time-major; training or inference kernel)");
  m.def("backward", &backward, "recurrent layer backward loop (hand-derived BPTT)");
}
