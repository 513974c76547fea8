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

}  // namespace vec_math
