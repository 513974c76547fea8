// The sLSTM (xLSTM, Beck et al. 2024) on a compiled CPU time loop, with a hand-derived backward.
// suite/models/slstm.py is the readable definition and the oracle the tests compare against;
// slstm_fast.py wraps this file in an autograd.Function.
//
// One layer, time-major. The gate pre-activations from the input, wx (T, B, 4H), are computed before the
// loop (the block's head-wise projections, in ATen); per step and batch slice the loop takes the recurrent
// product h_{t-1} Rᵀ head by head (R block-diagonal: NH products of d = H / NH inputs and 4d outputs, with
// small_gemm.h's micro-kernel on weights packed once per call), then the pointwise equations. Each thread
// runs the whole time loop for its own slice of the batch, with no barrier between steps (as lstm_fast.cpp).
// The weight gradients Σ_t δaᵀ h_{t-1} are one batched product after the loop (slstm_fast.py).
//
// Layout: per (t, b), pre-activations are head-major (NH, 4, d), gates (i, f, z, o); R is (NH, 4d, d);
// the bias (NH, 4d); states (B, H) with unit s = h d + j.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <pybind11/stl.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "small_gemm.h"
#include "vec_math.h"

namespace {

// ---- the pointwise math, written so that the loops that call it vectorise ---------------------------
// float: exp by range reduction and a degree-6 polynomial (Cephes' expf), log by mantissa and exponent and
// a degree-9 polynomial (Cephes' logf): a few ulp, about 3x faster here than glibc's vector functions.
// double (the tests' gradchecks): the library functions.
inline float exp_(float x) {
  x = std::fmin(std::fmax(x, -87.0f), 88.0f);
  const float n = __builtin_rintf(x * 1.44269504088896341f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
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

// log x for a normal, positive x
inline float log_(float x) { return vec_math::log_(x); }
inline double log_(double x) { return std::log(x); }

template <typename scalar_t>
inline scalar_t sigmoid(scalar_t x) {
  return scalar_t(1) / (scalar_t(1) + exp_(-x));
}
// log σ(x) = min(x, 0) − log(1 + e^{−|x|}), exact for large |x| on either side
template <typename scalar_t>
inline scalar_t log_sigmoid(scalar_t x) {
  return std::fmin(x, scalar_t(0)) - log_(scalar_t(1) + exp_(-std::fabs(x)));
}
inline float tanh_(float x) { return 2.0f / (1.0f + exp_(-2.0f * x)) - 1.0f; }
inline double tanh_(double x) { return std::tanh(x); }

constexpr int kSaved = 5;  // per step and unit: i', f', z, o, σ(−f̃)

// ---- one step of one batch row: the equations (slstm.py) --------------------------------------------
//   a = wx + R h_{t-1} + b, per head (ĩ, f̃, z̃, õ)       F = log σ(f̃)
//   m = max(ĩ, F + m_{t-1})   i' = exp(ĩ − m)   f' = exp(F + m_{t-1} − m)
//   (an empty memory, n_{t-1} = 0: m = ĩ and f' = 0)
//   z = tanh z̃   o = σ(õ)   c = f' c_{t-1} + i' z   n = f' n_{t-1} + i'   h = o c / n
template <typename scalar_t>
inline void step_forward(const scalar_t* wx, const scalar_t* rec, int64_t ld_rec, const scalar_t* bias,
                         const scalar_t* c_prev, const scalar_t* n_prev, scalar_t* m, scalar_t* h,
                         scalar_t* c, scalar_t* n, scalar_t* saved, int64_t NH, int64_t d) {
  const int64_t H = NH * d;
  for (int64_t hd = 0; hd < NH; ++hd) {
    const scalar_t *a = wx + hd * 4 * d, *r = rec + hd * ld_rec, *b = bias + hd * 4 * d;
    const int64_t s0 = hd * d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) {
      const int64_t s = s0 + j;
      const scalar_t ai = a[j] + r[j] + b[j], af = a[d + j] + r[d + j] + b[d + j];
      const scalar_t az = a[2 * d + j] + r[2 * d + j] + b[2 * d + j];
      const scalar_t ao = a[3 * d + j] + r[3 * d + j] + b[3 * d + j];
      const scalar_t F = log_sigmoid(af), mp = m[s], np = n_prev[s];
      const scalar_t mn = np == scalar_t(0) ? ai : std::fmax(ai, F + mp);
      const scalar_t ip = exp_(ai - mn), fp = np == scalar_t(0) ? scalar_t(0) : exp_(F + mp - mn);
      const scalar_t z = tanh_(az), o = sigmoid(ao);
      const scalar_t cn = fp * c_prev[s] + ip * z, nn = fp * np + ip;
      c[s] = cn;
      n[s] = nn;
      m[s] = mn;
      h[s] = o * cn / nn;
      if (saved) {
        saved[s] = ip;
        saved[H + s] = fp;
        saved[2 * H + s] = z;
        saved[3 * H + s] = o;
        saved[4 * H + s] = sigmoid(-af);
      }
    }
  }
}

// Backward of one step of one batch row. The stabiliser m_t is a constant here: h depends on c and n only
// through c / n, and every later (c, n) carries the same factor exp(−m_t), so the derivative of the loss
// along any path through m_t (t ≥ 1) sums to zero; dropping those paths gives the exact gradient (the
// reference's autograd takes them and gets the same numbers, which the tests check). m_0 is the caller's:
// its gradient is the path through f'_1.
// Given δh = ∂L/∂h_t (output + step t+1's recurrence) and δc, δn = ∂L/∂(c_t, n_t) through step t+1:
//   δo = δh c/n   δa_o = δo o(1 − o)   δc += δh o/n   δn −= δh o c/n²
//   δa_z = δc i' (1 − z²)   δa_i = (δc z + δn) i'   (∂i'/∂ĩ = i')
//   δf' = δc c_{t-1} + δn n_{t-1}   δa_f = δf' f' σ(−f̃)   (∂f'/∂f̃ = f' ∂F/∂f̃ = f' σ(−f̃))
//   ∂L/∂c_{t-1} = δc f'   ∂L/∂n_{t-1} = δn f'   ∂L/∂m_{t-1} = δf' f' (kept for t = 0)
// then ∂L/∂h_{t-1} = δa R (per head, in the loop), ∂L/∂wx_t = δa_t, ∂L/∂R = Σ_t δa_tᵀ h_{t-1}, ∂L/∂b = Σ_t δa_t.
template <typename scalar_t>
inline void step_backward(const scalar_t* dh_rec, int64_t ld_dh, const scalar_t* grad_out, const scalar_t* c,
                          const scalar_t* n, const scalar_t* c_prev, const scalar_t* n_prev,
                          const scalar_t* saved, scalar_t* dc, scalar_t* dn, scalar_t* dm, scalar_t* da,
                          int64_t NH, int64_t d) {
  const int64_t H = NH * d;
  for (int64_t hd = 0; hd < NH; ++hd) {
    const scalar_t* dr = dh_rec + hd * ld_dh;
    scalar_t* g = da + hd * 4 * d;
    const int64_t s0 = hd * d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) {
      const int64_t s = s0 + j;
      const scalar_t ip = saved[s], fp = saved[H + s], z = saved[2 * H + s], o = saved[3 * H + s],
                     sg = saved[4 * H + s];
      const scalar_t delta_h = dr[j] + grad_out[s], inv_n = scalar_t(1) / n[s], ratio = c[s] * inv_n;
      const scalar_t da_o = delta_h * ratio * o * (1 - o);
      const scalar_t delta_c = dc[s] + delta_h * o * inv_n;
      const scalar_t delta_n = dn[s] - delta_h * o * ratio * inv_n;
      const scalar_t delta_f = delta_c * c_prev[s] + delta_n * n_prev[s];
      g[j] = (delta_c * z + delta_n) * ip;
      g[d + j] = delta_f * fp * sg;
      g[2 * d + j] = delta_c * ip * (1 - z * z);
      g[3 * d + j] = da_o;
      dc[s] = delta_c * fp;
      dn[s] = delta_n * fp;
      dm[s] = delta_f * fp;
    }
  }
}

// ---- the loops --------------------------------------------------------------------------------------

// The batch split: slice s of n holds rows [s B / n, (s + 1) B / n), at least 4 rows each, one per thread.
template <class F>
void for_each_slice(int64_t B, F&& f) {
  const int64_t n = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), B / 4));
  at::parallel_for(0, n, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) f(s * B / n, (s + 1) * B / n);
  });
}

// Each head's block of R packed for small_gemm: forward Rᵀ (K = d, N = 4d), backward R (K = 4d, N = d).
template <typename scalar_t>
at::Tensor pack_heads(const at::Tensor& R, bool transpose) {
  const int64_t NH = R.size(0), d = R.size(2), K = transpose ? d : 4 * d, N = transpose ? 4 * d : d;
  const int64_t per_head = small_gemm::packed_size<scalar_t>(K, N);
  at::Tensor out = at::empty({NH * per_head}, R.options());
  for (int64_t h = 0; h < NH; ++h) {
    const scalar_t* w = R.data_ptr<scalar_t>() + h * 4 * d * d;  // row-major (4d, d)
    small_gemm::pack<scalar_t>(w, K, N, transpose ? 1 : d, transpose ? d : 1,
                               out.data_ptr<scalar_t>() + h * per_head);
  }
  return out;
}

struct Forward {
  at::Tensor wx, R, bias, h0, c0, n0, m0;
  at::Tensor hs, cs, ns, m, saved;  // outputs (see forward() below)
};

// Training (kTrain): hs, cs, ns (T+1, B, H) with [0] = the initial state, saved (T, B, 5H), m (B, H) the
// last stabiliser. Inference: hs (T, B, H) the output; cs, ns, m (B, H) start as c0, n0, m0, updated in place.
template <typename scalar_t, bool kTrain>
void forward_loop(Forward& a) {
  namespace sg = small_gemm;
  const int64_t T = a.wx.size(0), B = a.wx.size(1), H = a.h0.size(1), NH = a.R.size(0), d = a.R.size(2);
  const int64_t G = 4 * H, ld_head = sg::padded<scalar_t>(4 * d), ld_rec = NH * ld_head;
  const int64_t per_head = sg::packed_size<scalar_t>(d, 4 * d);
  const at::Tensor packed = pack_heads<scalar_t>(a.R, true);
  const scalar_t *WX = a.wx.data_ptr<scalar_t>(), *RP = packed.data_ptr<scalar_t>(),
                 *BIAS = a.bias.data_ptr<scalar_t>(), *H0 = a.h0.data_ptr<scalar_t>();
  scalar_t *HS = a.hs.data_ptr<scalar_t>(), *CS = a.cs.data_ptr<scalar_t>(), *NS = a.ns.data_ptr<scalar_t>();
  scalar_t *M = a.m.data_ptr<scalar_t>(), *S = kTrain ? a.saved.data_ptr<scalar_t>() : nullptr;
  for_each_slice(B, [&](int64_t b0, int64_t b1) {
    const int64_t nb = b1 - b0;
    std::vector<scalar_t> rec(nb * ld_rec);
    for (int64_t t = 0; t < T; ++t) {
      const scalar_t* h_prev =
          kTrain ? HS + (t * B + b0) * H : (t == 0 ? H0 + b0 * H : HS + ((t - 1) * B + b0) * H);
      for (int64_t hd = 0; hd < NH; ++hd)  // R h_{t-1}, head by head
        sg::gemm<scalar_t>(nb, 4 * d, d, h_prev + hd * d, H, RP + hd * per_head, rec.data() + hd * ld_head,
                           ld_rec, false);
      const int64_t at_prev = kTrain ? t * B : 0, at_new = kTrain ? (t + 1) * B : 0;
      scalar_t* h_new = HS + ((kTrain ? t + 1 : t) * B + b0) * H;
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t row = b0 + b;
        step_forward<scalar_t>(WX + (t * B + row) * G, rec.data() + b * ld_rec, ld_head, BIAS,
                               CS + (at_prev + row) * H, NS + (at_prev + row) * H, M + row * H, h_new + b * H,
                               CS + (at_new + row) * H, NS + (at_new + row) * H,
                               kTrain ? S + (t * B + row) * kSaved * H : nullptr, NH, d);
      }
    }
  });
}

struct Backward {
  at::Tensor grad_out, grad_hn, grad_cn, grad_nn, hs, cs, ns, saved, R;
};

// From t = T-1 down to 0, per batch slice: the step's backward (δa of every row), then ∂L/∂h_{t-1} = δa R
// head by head. Returns {∂L/∂wx (T, B, 4H), ∂L/∂h0, ∂L/∂c0, ∂L/∂n0, ∂L/∂m0}.
template <typename scalar_t>
std::vector<at::Tensor> backward_loop(const Backward& a) {
  namespace sg = small_gemm;
  const int64_t T = a.grad_out.size(0), B = a.grad_out.size(1), H = a.grad_out.size(2);
  const int64_t NH = a.R.size(0), d = a.R.size(2), G = 4 * H;
  const int64_t ld_head = sg::padded<scalar_t>(d), ld_dh = NH * ld_head;
  const int64_t per_head = sg::packed_size<scalar_t>(4 * d, d);
  const at::Tensor packed = pack_heads<scalar_t>(a.R, false);
  const auto opt = a.grad_out.options();
  at::Tensor grad_wx = at::empty({T, B, G}, opt), grad_h0 = at::empty({B, H}, opt);
  at::Tensor grad_c0 = a.grad_cn.clone(), grad_n0 = a.grad_nn.clone(), grad_m0 = at::zeros({B, H}, opt);
  const scalar_t *GO = a.grad_out.data_ptr<scalar_t>(), *GHN = a.grad_hn.data_ptr<scalar_t>();
  const scalar_t *CS = a.cs.data_ptr<scalar_t>(), *NS = a.ns.data_ptr<scalar_t>(),
                 *S = a.saved.data_ptr<scalar_t>(), *RP = packed.data_ptr<scalar_t>();
  scalar_t *DA = grad_wx.data_ptr<scalar_t>(), *DH0 = grad_h0.data_ptr<scalar_t>();
  scalar_t *DC = grad_c0.data_ptr<scalar_t>(), *DN = grad_n0.data_ptr<scalar_t>(),
           *DM = grad_m0.data_ptr<scalar_t>();
  for_each_slice(B, [&](int64_t b0, int64_t b1) {
    const int64_t nb = b1 - b0;
    std::vector<scalar_t> dh(nb * ld_dh, scalar_t(0));  // ∂L/∂h_t through step t+1, head blocks padded
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t hd = 0; hd < NH; ++hd)
        std::copy(GHN + (b0 + b) * H + hd * d, GHN + (b0 + b) * H + (hd + 1) * d, &dh[b * ld_dh + hd * ld_head]);
    for (int64_t t = T - 1; t >= 0; --t) {
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t row = b0 + b, now = ((t + 1) * B + row) * H, before = (t * B + row) * H;
        step_backward<scalar_t>(&dh[b * ld_dh], ld_head, GO + (t * B + row) * H, CS + now, NS + now,
                                CS + before, NS + before, S + (t * B + row) * kSaved * H, DC + row * H,
                                DN + row * H, DM + row * H, DA + (t * B + row) * G, NH, d);
      }
      for (int64_t hd = 0; hd < NH; ++hd)  // ∂L/∂h_{t-1} = δa R, head by head
        sg::gemm<scalar_t>(nb, d, 4 * d, DA + (t * B + b0) * G + hd * 4 * d, G, RP + hd * per_head,
                           dh.data() + hd * ld_head, ld_dh, false);
    }
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t hd = 0; hd < NH; ++hd)
        std::copy(&dh[b * ld_dh + hd * ld_head], &dh[b * ld_dh + hd * ld_head] + d,
                  DH0 + (b0 + b) * H + hd * d);
  });
  return {grad_wx, grad_h0, grad_c0, grad_n0, grad_m0};
}

}  // namespace

// wx (T, B, 4H) head-major pre-activations from the input; R (NH, 4d, d); bias (NH·4d); h0, c0, n0, m0 (B, H).
// train: returns {hs (T+1, B, H), cs (T+1, B, H), ns (T+1, B, H), m_T (B, H), saved (T, B, 5H)}, outputs = hs[1:];
// else:  returns {out (T, B, H), c_T, n_T, m_T}.
std::vector<at::Tensor> forward(at::Tensor wx, at::Tensor R, at::Tensor bias, at::Tensor h0, at::Tensor c0,
                                at::Tensor n0, at::Tensor m0, bool train) {
  Forward a{wx.contiguous(), R.contiguous(), bias.contiguous(), h0.contiguous(),
            c0.contiguous(), n0.contiguous(), m0.contiguous()};
  TORCH_CHECK(a.wx.dim() == 3 && a.R.dim() == 3 && a.R.size(1) == 4 * a.R.size(2), "slstm: bad shapes");
  const int64_t T = a.wx.size(0), B = a.wx.size(1), H = a.h0.size(1);
  TORCH_CHECK(a.wx.size(2) == 4 * H && a.R.size(0) * a.R.size(2) == H && a.bias.numel() == 4 * H,
              "slstm: wx must be (T, B, 4H), R (NH, 4H/NH, H/NH), bias 4H");
  const auto opt = a.wx.options();
  a.m = a.m0.clone();
  if (train) {
    a.hs = at::empty({T + 1, B, H}, opt), a.cs = at::empty({T + 1, B, H}, opt), a.ns = at::empty({T + 1, B, H}, opt);
    a.hs[0].copy_(a.h0), a.cs[0].copy_(a.c0), a.ns[0].copy_(a.n0);
    a.saved = at::empty({T, B, kSaved * H}, opt);
  } else {
    a.hs = at::empty({T, B, H}, opt), a.cs = a.c0.clone(), a.ns = a.n0.clone();
  }
  AT_DISPATCH_FLOATING_TYPES(a.wx.scalar_type(), "slstm_forward", [&] {
    if (train)
      forward_loop<scalar_t, true>(a);
    else
      forward_loop<scalar_t, false>(a);
  });
  if (train) return {a.hs, a.cs, a.ns, a.m, a.saved};
  return {a.hs, a.cs, a.ns, a.m};
}

std::vector<at::Tensor> backward(at::Tensor grad_out, at::Tensor grad_hn, at::Tensor grad_cn, at::Tensor grad_nn,
                                 at::Tensor hs, at::Tensor cs, at::Tensor ns, at::Tensor saved, at::Tensor R) {
  Backward a{grad_out.contiguous(), grad_hn.contiguous(), grad_cn.contiguous(), grad_nn.contiguous(), hs, cs,
             ns, saved, R.contiguous()};
  std::vector<at::Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(a.grad_out.scalar_type(), "slstm_backward",
                             [&] { result = backward_loop<scalar_t>(a); });
  return result;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "sLSTM layer forward (time-major; training or inference kernel)");
  m.def("backward", &backward, "sLSTM layer backward (hand-derived BPTT): ∂L/∂wx and the initial state's");
}
