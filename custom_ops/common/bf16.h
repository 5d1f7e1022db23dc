// bfloat16 <-> float as TensorFlow converts them (tf.cast, Eigen's scalar conversion): widening is exact;
// narrowing rounds to nearest even and makes NaN a quiet NaN with its sign. One value at a time, or 16 at a
// time where AVX-512 is (Eigen's casts of plain arrays ran one value at a time).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "Eigen/Core"

namespace vcar {

inline float to_float(float v) { return v; }
inline float to_float(Eigen::bfloat16 v) {
  const uint32_t bits = static_cast<uint32_t>(Eigen::numext::bit_cast<uint16_t>(v)) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline void store_as(float v, float* out) { *out = v; }
inline void store_as(float v, Eigen::bfloat16* out) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t nan = ((bits >> 16) & 0x8000u) | 0x7fc0u;
  *out = Eigen::numext::bit_cast<Eigen::bfloat16>(static_cast<uint16_t>(v != v ? nan : rounded));
}

#if defined(__AVX512F__)
// The mask of the first n of 16 lanes (none for n <= 0).
inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n > 0 ? n : 0)) - 1u);
}

inline __m512 widen16(const Eigen::bfloat16* src) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// v rounded to the nearest bfloat16 (ties to even), as a float; NaN a quiet NaN with its sign.
inline __m512 round_to_bf16(__m512 v) {
  const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff);
  const __m512i high_half = _mm512_set1_epi32(static_cast<int32_t>(0xffff0000u));
  const __m512i sign = _mm512_set1_epi32(static_cast<int32_t>(0x80000000u)), quiet_nan = _mm512_set1_epi32(0x7fc00000);
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), one);
  const __m512i rounded = _mm512_and_si512(_mm512_add_epi32(bits, _mm512_add_epi32(bias, odd)), high_half);
  const __m512i nan = _mm512_or_si512(_mm512_and_si512(bits, sign), quiet_nan);
  return _mm512_castsi512_ps(_mm512_mask_blend_epi32(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), rounded, nan));
}

// 16 floats that are bfloat16 values (round_to_bf16's) stored as bfloat16.
inline void store16_exact(__m512 v, Eigen::bfloat16* dst) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(v), 16)));
}

inline void narrow16(__m512 v, Eigen::bfloat16* dst) { store16_exact(round_to_bf16(v), dst); }

#if defined(__AVX512BW__) && defined(__AVX512VL__)
#define VCAR_MASKED16 1  // load16 and store16 below exist
// The lanes of mask k only: float or bfloat16 to float, and back (bfloat16 rounded as narrow16).
inline __m512 load16(const float* p, __mmask16 k) { return _mm512_maskz_loadu_ps(k, p); }
inline __m512 load16(const Eigen::bfloat16* p, __mmask16 k) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p)), 16));
}
inline void store16(__m512 v, float* p, __mmask16 k) { _mm512_mask_storeu_ps(p, k, v); }
inline void store16(__m512 v, Eigen::bfloat16* p, __mmask16 k) {
  const __m512i bits = _mm512_srli_epi32(_mm512_castps_si512(round_to_bf16(v)), 16);
  _mm256_mask_storeu_epi16(p, k, _mm512_cvtepi32_epi16(bits));
}
#endif
#endif

inline void widen(const Eigen::bfloat16* src, float* dst, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, widen16(src + i));
#endif
  for (; i < n; ++i) dst[i] = to_float(src[i]);
}

inline void narrow_to(const float* src, Eigen::bfloat16* dst, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) narrow16(_mm512_loadu_ps(src + i), dst + i);
#endif
  for (; i < n; ++i) store_as(src[i], dst + i);
}

}  // namespace vcar
