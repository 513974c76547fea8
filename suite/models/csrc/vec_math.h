// e^x on one float or a vector of floats (GCC vector extensions), shared by the compiled modules
// (lstm_fast.cpp, transformer.cpp). e^x = 2^y with y = x log2 e, split as
// y = n + f, n = round(y) (adding 1.5·2^23 leaves n in the low bits), f in [-1/2, 1/2], 2^f by a degree-6
// polynomial (relative error ~1e-6), 2^n from the exponent bits; y is clamped to [-126, 126].
// About 3x faster here than glibc's vector expf, and written on vectors (not left to the auto-vectoriser,
// which stayed at AVX2 width and rounded with vrndscale+vcvt).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace vec_math {

template <class V>
struct IntOf {  // the integer vector of a float vector's bits
  typedef int32_t type __attribute__((vector_size(sizeof(V))));
};
template <>
struct IntOf<float> {
  typedef int32_t type;
};
template <class V>  // float or a vector of floats
inline V exp_(V x) {
  using I = typename IntOf<V>::type;
  V y = x * 1.44269504088896341f;
  y = y < -126.0f ? V{} - 126.0f : y;  // 2^n stays a normal float, so 1 + e^x never overflows
  y = y > 126.0f ? V{} + 126.0f : y;
  const V t = y + 12582912.0f;  // 1.5·2^23: t's bits are 0x4B400000 + round(y)
  I n;
  std::memcpy(&n, &t, sizeof t);
  n -= 0x4B400000;  // from the bits: -ffast-math would fold (y + c) - c back into y
  V f;
  if constexpr (std::is_same_v<V, float>)
    f = y - float(n);
  else
    f = y - __builtin_convertvector(n, V);
  V p = V{} + 1.535336188319500e-4f;
  p = p * f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  p = p * f + 1.0f;
  const I bits = (n + 127) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof bits);
  return p * scale;
}

// log x for x a normal, positive float (or a vector of them), shared by the sLSTM's stabiliser (slstm.cpp)
// and the attention's log-sum-exp (transformer.cpp): Cephes' logf, x = 2^e m with m in [√½, √2), log m by its
// degree-9 polynomial in m − 1 (relative error ~1e-7).
template <class V>
inline V log_(V x) {
  using I = typename IntOf<V>::type;
  I bits;
  std::memcpy(&bits, &x, sizeof x);
  const I e = ((bits >> 23) & 0xff) - 126;  // x = 2^e m, m in [0.5, 1)
  bits = (bits & 0x007fffff) | 0x3f000000;
  V m, f, ef;
  std::memcpy(&m, &bits, sizeof m);
  if constexpr (std::is_same_v<V, float>) {  // m < √½: m doubles, e drops by one
    const bool small = m < 0.707106781186547524f;
    f = (small ? m + m : m) - 1.0f;
    ef = float(small ? e - 1 : e);
  } else {
    const I small = m < 0.707106781186547524f;  // all ones (−1) where m < √½
    f = m + (small ? m : V{}) - 1.0f;
    ef = __builtin_convertvector(e + small, V);
  }
  const V z = f * f;
  V y = V{} + 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z - 2.12194440e-4f * ef - 0.5f * z;
  return f + y + 0.693359375f * ef;
}

}  // namespace vec_math
