// The floating-point environment of every thread that computes: the calling thread and each thread of
// ATen's intra-op pool (suite/models/float_env.py's set_flush_denormals wraps this).
//
// Why: x86 cores take a microcode assist (on the order of 100 cycles) for each operation that reads or
// produces a denormal float (|x| < 1.2e-38 in float32), and the high-learning-rate points of a sweep make
// them by the million (softmax, sigmoid and GELU tails of large pre-activations times small values). The
// library ops and our kernels alike then ran a training step 2.5-4.4x slower, unevenly across models.
// Flushing them to zero (FTZ: results, DAZ: inputs) is one bit each in MXCSR, which is per thread:
// torch.set_flush_denormal sets only the calling thread's, so the pool's threads are reached here, one
// parallel_for index per thread.
#include <ATen/Parallel.h>
#include <pybind11/pybind11.h>

#include <atomic>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
constexpr bool kSupported = true;
constexpr unsigned kFlushBits = 0x8040;  // MXCSR bit 15 (FTZ) and bit 6 (DAZ)
bool flushed_here() { return (_mm_getcsr() & kFlushBits) == kFlushBits; }
void flush_here(bool on) { _mm_setcsr(on ? (_mm_getcsr() | kFlushBits) : (_mm_getcsr() & ~kFlushBits)); }
#elif defined(__aarch64__)
constexpr bool kSupported = true;
constexpr unsigned long kFlushBits = 1ul << 24;  // FPCR.FZ
unsigned long fpcr() {
  unsigned long v;
  asm volatile("mrs %0, fpcr" : "=r"(v));
  return v;
}
bool flushed_here() { return (fpcr() & kFlushBits) != 0; }
void flush_here(bool on) {
  const unsigned long v = on ? (fpcr() | kFlushBits) : (fpcr() & ~kFlushBits);
  asm volatile("msr fpcr, %0" : : "r"(v));
}
#else
constexpr bool kSupported = false;
bool flushed_here() { return false; }
void flush_here(bool) {}
#endif

// f on every thread of the intra-op pool (the caller is the team's thread 0): with n = the pool's size and
// a grain of 1, parallel_for hands each thread exactly one index. Returns how many threads ran it and how
// many of them f answered true on.
template <class F>
std::pair<int, int> on_every_thread(F&& f) {
  std::atomic<int> ran{0}, yes{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      ran += 1;
      yes += f() ? 1 : 0;
    }
  });
  return {ran.load(), yes.load()};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.attr("supported") = kSupported;
  m.def(
      "set_flush_denormals",
      [](bool on) {
        flush_here(on);
        return on_every_thread([on] {
          flush_here(on);
          return flushed_here();
        });
      },
      "set FTZ and DAZ (or clear them) on the calling thread and every intra-op thread: (threads, threads "
      "that now flush)");
  m.def(
      "flushed_threads", [] { return on_every_thread([] { return flushed_here(); }); },
      "(threads asked, threads that flush denormals) over the intra-op pool");
}
