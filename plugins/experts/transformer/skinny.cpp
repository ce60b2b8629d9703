// y = x W^T + b for a few rows of x (batched decoding steps, catch-ups, short prompts). BLAS gemm packs
// the whole weight into a buffer on every call, which for 2-48 rows costs more than the arithmetic; this
// kernel instead streams each weight row once from memory and multiplies it with every input row
// while it is in registers (the input rows stay in L1/L2). AVX-512 or AVX2+FMA, chosen at run time;
// other machines keep the BLAS path. Each output element is one fixed sequence of fused multiply-adds
// over k followed by a fixed horizontal sum, whatever the number of rows or threads: a row's result
// does not depend on which rows share its call.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include <ATen/Parallel.h>

#include "transformer.hpp"

namespace colm::transformer {
namespace {

// Past this many rows (long prompts, big batches) BLAS's packed gemm wins. Measured on f32 GPT-2
// shapes from d = 256 to 1024, 2 threads: the kernel is 1.4-4x faster up to 41 rows (prompts and
// long catch-ups of collaborative decoding), BLAS ahead from about 56.
constexpr int64_t kMaxRows = 48;
constexpr int kGroup = 8;         // input rows per pass over a pair of weight rows (accumulator registers)
constexpr int64_t kPrefetch = 1024;  // floats ahead of the weight loads (prefetches past the end are harmless)

// ---- AVX-512: two weight rows x NB input rows per pass, 16 lanes ----------------------------------

// Lane i of the result: the sum of v[i]'s 16 lanes. Within each 128-bit block: pairs of vectors
// interleaved and added (32-bit, then 64-bit), then the four blocks added across vectors.
__attribute__((target("avx512f"))) inline __m512 sum16_avx512(const __m512* v) {
  __m512 t[8], u[4];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
    t[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const __m512d lo = _mm512_unpacklo_pd(_mm512_castps_pd(t[2 * j]), _mm512_castps_pd(t[2 * j + 1]));
    const __m512d hi = _mm512_unpackhi_pd(_mm512_castps_pd(t[2 * j]), _mm512_castps_pd(t[2 * j + 1]));
    u[j] = _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));  // block k: vectors 4j..4j+3, block k's sums
  }
  const __m512 v0 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], 0x88), _mm512_shuffle_f32x4(u[0], u[1], 0xDD));
  const __m512 v1 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], 0x88), _mm512_shuffle_f32x4(u[2], u[3], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(v0, v1, 0x88), _mm512_shuffle_f32x4(v0, v1, 0xDD));
}
template <int NB>
__attribute__((target("avx512f"))) void pair_avx512(const float* x, int64_t ldx, const float* w0, const float* w1,
                                                     int64_t in, float* s0, float* s1) {
  __m512 a0[NB], a1[NB];
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b) a0[b] = _mm512_setzero_ps(), a1[b] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= in; k += 16) {
    // The weight streams from memory: ask for it 4 KB ahead (measured: the lm head 1.5x faster).
    _mm_prefetch(reinterpret_cast<const char*>(w0 + k + kPrefetch), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w1 + k + kPrefetch), _MM_HINT_T0);
    const __m512 v0 = _mm512_loadu_ps(w0 + k), v1 = _mm512_loadu_ps(w1 + k);
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) {
      __m512 xb = _mm512_loadu_ps(x + b * ldx + k);
      asm("" : "+v"(xb));  // one load feeding both FMAs (folding it into each costs a second load)
      a0[b] = _mm512_fmadd_ps(v0, xb, a0[b]);
      a1[b] = _mm512_fmadd_ps(v1, xb, a1[b]);
    }
  }
  if (k < in) {
    const __mmask16 m = static_cast<__mmask16>((1u << (in - k)) - 1);
    const __m512 v0 = _mm512_maskz_loadu_ps(m, w0 + k), v1 = _mm512_maskz_loadu_ps(m, w1 + k);
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) {
      const __m512 xb = _mm512_maskz_loadu_ps(m, x + b * ldx + k);
      a0[b] = _mm512_fmadd_ps(v0, xb, a0[b]);
      a1[b] = _mm512_fmadd_ps(v1, xb, a1[b]);
    }
  }
  // The 2*NB horizontal sums at once (a transpose-and-add over 16 vectors, zeros past 2*NB): lane i
  // of the result sums vector i, by the same tree for every i.
  __m512 v[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) v[i] = i < NB ? a0[i] : i < 2 * NB ? a1[i - NB] : _mm512_setzero_ps();
  float sums[16];
  _mm512_storeu_ps(sums, sum16_avx512(v));
  for (int b = 0; b < NB; ++b) s0[b] = sums[b], s1[b] = sums[NB + b];
}

// ---- AVX2 + FMA: one weight row x NB input rows per pass, 8 lanes ---------------------------------
__attribute__((target("avx2,fma"))) inline float hsum_avx2(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

template <int NB>
__attribute__((target("avx2,fma"))) void row_avx2(const float* x, int64_t ldx, const float* w0, int64_t in, float* s0) {
  __m256 a[NB];
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b) a[b] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= in; k += 8) {
    _mm_prefetch(reinterpret_cast<const char*>(w0 + k + kPrefetch), _MM_HINT_T0);
    const __m256 v = _mm256_loadu_ps(w0 + k);
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) a[b] = _mm256_fmadd_ps(v, _mm256_loadu_ps(x + b * ldx + k), a[b]);
  }
  float tail[NB] = {};
  for (; k < in; ++k)
    for (int b = 0; b < NB; ++b) tail[b] = std::fma(w0[k], x[b * ldx + k], tail[b]);
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b) s0[b] = hsum_avx2(a[b]) + tail[b];
}

using Isa = SkinnyIsa;

Isa detect() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
  return Isa::none;
}

const Isa kIsa = detect();

// Output columns [o0, o1) for every input row: y[b, o] = x[b] . w[o] (+ bias[o]).
void columns(Isa isa, const float* x, int64_t rows, int64_t in, const float* w, const float* bias, float* y,
             int64_t out, int64_t o0, int64_t o1) {
  float s0[kGroup], s1[kGroup];
  const int64_t step = isa == Isa::avx512 ? 2 : 1;
  for (int64_t o = o0; o < o1; o += step) {
    const bool two = step == 2 && o + 1 < o1;
    const float* w0 = w + o * in;
    const float* w1 = two ? w0 + in : w0;
    for (int64_t g = 0; g < rows; g += kGroup) {
      const int nb = static_cast<int>(std::min<int64_t>(kGroup, rows - g));
      const float* xg = x + g * in;
      if (isa == Isa::avx512) {
        switch (nb) {
          case 1: pair_avx512<1>(xg, in, w0, w1, in, s0, s1); break;
          case 2: pair_avx512<2>(xg, in, w0, w1, in, s0, s1); break;
          case 3: pair_avx512<3>(xg, in, w0, w1, in, s0, s1); break;
          case 4: pair_avx512<4>(xg, in, w0, w1, in, s0, s1); break;
          case 5: pair_avx512<5>(xg, in, w0, w1, in, s0, s1); break;
          case 6: pair_avx512<6>(xg, in, w0, w1, in, s0, s1); break;
          case 7: pair_avx512<7>(xg, in, w0, w1, in, s0, s1); break;
          default: pair_avx512<8>(xg, in, w0, w1, in, s0, s1); break;
        }
      } else {
        switch (nb) {
          case 1: row_avx2<1>(xg, in, w0, in, s0); break;
          case 2: row_avx2<2>(xg, in, w0, in, s0); break;
          case 3: row_avx2<3>(xg, in, w0, in, s0); break;
          case 4: row_avx2<4>(xg, in, w0, in, s0); break;
          case 5: row_avx2<5>(xg, in, w0, in, s0); break;
          case 6: row_avx2<6>(xg, in, w0, in, s0); break;
          case 7: row_avx2<7>(xg, in, w0, in, s0); break;
          default: row_avx2<8>(xg, in, w0, in, s0); break;
        }
      }
      const float b0 = bias ? bias[o] : 0.f, b1 = bias && two ? bias[o + 1] : 0.f;
      for (int b = 0; b < nb; ++b) {
        y[(g + b) * out + o] = s0[b] + b0;
        if (two) y[(g + b) * out + o + 1] = s1[b] + b1;
      }
    }
  }
}

}  // namespace

SkinnyIsa skinny_isa() { return kIsa; }

torch::Tensor skinny_linear(const torch::Tensor& x2, const torch::Tensor& weight, const torch::Tensor& bias) {
  return skinny_linear(x2, weight, bias, kIsa);
}

torch::Tensor skinny_linear(const torch::Tensor& x2, const torch::Tensor& weight, const torch::Tensor& bias,
                            SkinnyIsa isa) {
  const int64_t rows = x2.size(0), in = weight.size(1), out = weight.size(0);
  const bool supported = isa == kIsa || (isa == Isa::avx2 && kIsa == Isa::avx512);  // AVX-512 CPUs have AVX2
  const bool usable = isa != Isa::none && supported && rows >= 2 && rows <= kMaxRows && x2.device().is_cpu() &&
                      weight.device().is_cpu() && x2.scalar_type() == torch::kFloat32 &&
                      weight.scalar_type() == torch::kFloat32 && weight.is_contiguous() &&
                      (!bias.defined() || (bias.scalar_type() == torch::kFloat32 && bias.is_contiguous())) &&
                      !(torch::GradMode::is_enabled() &&
                        (x2.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad())));
  if (!usable) return torch::Tensor();
  const auto x = x2.contiguous();
  auto y = torch::empty({rows, out}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  // Work split over output columns (even boundaries keep AVX-512's pairs aligned); each thread
  // streams its own slice of the weight.
  at::parallel_for(0, (out + 1) / 2, 32, [&](int64_t begin, int64_t end) {
    columns(isa, xp, rows, in, wp, bp, yp, out, 2 * begin, std::min(out, 2 * end));
  });
  return y;
}

}  // namespace colm::transformer
