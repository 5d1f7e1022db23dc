// Fused modulated deformable convolution (DCNv2), stride 1, 'same' padding, NHWC float32 (bfloat16 in and
// out on the CPU, computed in float32).
//
// Layout as vcar_tf/ops/deform_conv.py: offset (B, H, W, 2*D*k*k) with dy, dx per tap and
// deformable group, mask (B, H, W, D*k*k), kernel (k, k, C/groups, O). Bilinear sampling, zero
// outside the image (a corner contributes only when it lies inside).
//
// The work is split into tiles of pixels; a tile builds its own im2col block (never the whole
// image's), multiplies it with Eigen, and tiles run on TF's CPU thread pool. With AVX-512 and one
// channel per deformable group, 16 taps are sampled at a time with gathers from a zero-padded
// planar copy of the input (1x1 kernels: from the input itself); otherwise plain C++.

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#define VCAR_AVX512 1
#endif

#include "../common/bf16.h"
#include "Eigen/Core"
#include "op_common.h"
#include "tensorflow/core/lib/core/threadpool.h"

namespace vcar {

using tensorflow::OpKernelContext;
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
using Map = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;

constexpr int64_t kTile = 256;  // pixels per im2col block

// Per-(deformable group, tap) constants, j = d * taps + t: the tap's offset from the centre and
// the group's first input channel. im2col columns are channel-major, c * taps + t, so a group of
// `groups` is a contiguous block of columns and, with one channel per deformable group, the
// column of j is j itself; the kernel's rows (t, c) are permuted to match (kernel_in_column_order).
struct TapTable {
  std::vector<float> ty, tx;
  std::vector<int32_t> channel;
};

TapTable tap_table(const Geometry& g) {
  const int64_t n = g.dg * g.taps;
  TapTable tt{std::vector<float>(n), std::vector<float>(n), std::vector<int32_t>(n)};
  for (int64_t j = 0; j < n; ++j) {
    tt.ty[j] = g.tap_y[j % g.taps];
    tt.tx[j] = g.tap_x[j % g.taps];
    tt.channel[j] = static_cast<int32_t>(j / g.taps * g.cd);
  }
  return tt;
}

// (B, C, H + 5, W + 5) with the image at rows and columns [2, H + 2) x [2, W + 2): a sample
// position clamped to [-2, H + 1] has every corner inside it, and a row's two corners are adjacent.
struct Planar {
  int64_t wp, plane, image;  // row stride, floats per channel plane, floats per image
  explicit Planar(const Geometry& g) : wp(g.w + 5), plane((g.w + 5) * (g.h + 5)), image((g.w + 5) * (g.h + 5) * g.c) {}
  int64_t at(int64_t y, int64_t x) const { return (y + 2) * wp + x + 2; }
};

// The AVX-512 paths' conditions (their gather indices are int32): 1x1 kernels with one channel per
// deformable group (RFDA's alignment) sample x in place (pointwise); larger ones a planar copy.
inline bool use_pointwise(const Geometry& g) {
#if VCAR_AVX512
  return g.k == 1 && g.cd == 1 && (g.h + 2) * g.w * g.c < (int64_t{1} << 31);
#else
  return false;
#endif
}

inline bool use_planar(const Geometry& g, const Planar& pl) {
#if VCAR_AVX512
  return g.cd == 1 && !use_pointwise(g) && pl.image < (int64_t{1} << 31);
#else
  return false;
#endif
}

// Zero-filled scratch floats from TensorFlow's CPU allocator, which keeps freed blocks for the
// next call: no page faults after the first call (fresh pages had cost up to 30% of the forward
// at 832x480); null data where the allocator has no room.
class ScratchFloats {
 public:
  ScratchFloats(OpKernelContext* ctx, int64_t n, bool zeroed = true) {
    if (!ctx->allocate_temp(tensorflow::DT_FLOAT, tensorflow::TensorShape({std::max<int64_t>(n, 1)}), &tensor_).ok())
      return;
    data_ = tensor_.flat<float>().data();
    if (zeroed) std::fill(data_, data_ + n, 0.f);
  }
  float* data() const { return data_; }

 private:
  Tensor tensor_;
  float* data_ = nullptr;
};

// T = bfloat16: x is widened into float scratch before the float code runs and dx is computed into
// float scratch and narrowed by narrow(); the rows of offset, mask, y, the output gradient, doffset
// and dmask are converted a tile at a time (TileInput, TileOutput), while they are in cache.
class Bf16Staging {
 public:
  Bf16Staging(OpKernelContext* ctx, tensorflow::thread::ThreadPool* pool) : ctx_(ctx), pool_(pool) {}

  absl::Status stage(DeformIO* io) {
    if (io->x == nullptr) {
      const Tensor& in = ctx_->input(0);
      const int64_t n = in.NumElements();
      float* dst = scratch(n);
      if (dst == nullptr) return tensorflow::errors::ResourceExhausted("deform conv: no memory to widen bf16");
      const Eigen::bfloat16* src = in.flat<Eigen::bfloat16>().data();
      in_parallel(n, [=](int64_t a, int64_t b) { widen(src + a, dst + a, b - a); });
      io->x = dst;
    }
    if (ctx_->num_outputs() > 1 && io->out[0] == nullptr) {
      Tensor* out = ctx_->mutable_output(0);
      io->out[0] = scratch(out->NumElements());
      if (io->out[0] == nullptr) return tensorflow::errors::ResourceExhausted("deform conv: no memory for bf16");
      narrowed_.push_back({io->out[0], out});
    }
    return absl::OkStatus();
  }

  void narrow() const {
    for (const auto& [src, out] : narrowed_) {
      Eigen::bfloat16* dst = out->flat<Eigen::bfloat16>().data();
      in_parallel(out->NumElements(), [=](int64_t a, int64_t b) { narrow_to(src + a, dst + a, b - a); });
    }
  }

 private:
  float* scratch(int64_t n) {
    scratch_.push_back(std::make_unique<ScratchFloats>(ctx_, n, false));
    return scratch_.back()->data();
  }
  template <typename F>
  void in_parallel(int64_t n, F f) const {
    pool_->ParallelFor(n, 4, f);
  }

  OpKernelContext* ctx_;
  tensorflow::thread::ThreadPool* pool_;
  std::vector<std::unique_ptr<ScratchFloats>> scratch_;
  std::vector<std::pair<float*, Tensor*>> narrowed_;
};

// The sigmoid in place, by Eigen's packet form of its float logistic (TF's Sigmoid op), the tail padded
// to a whole packet: every value goes through the same code wherever it lies in a tile, so results do
// not depend on the tiling (Eigen's own loops take a scalar path for unaligned ends).
inline void logistic(float* v, int64_t n) {
  using Packet = Eigen::internal::packet_traits<float>::type;
  constexpr int64_t kLanes = Eigen::internal::unpacket_traits<Packet>::size;
  const Eigen::internal::scalar_logistic_op<float> op;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    Eigen::internal::pstoreu(v + i, op.packetOp(Eigen::internal::ploadu<Packet>(v + i)));
  if (i < n) {
    float tail[kLanes] = {};
    std::copy(v + i, v + n, tail);
    Eigen::internal::pstoreu(tail, op.packetOp(Eigen::internal::ploadu<Packet>(tail)));
    std::copy(tail, tail + (n - i), v + i);
  }
}

// A tile's rows [p0, p0 + n) of columns [first, first + width) of a (pixels, stride) input in float:
// the tensor's own rows (float32, all its columns), or a copy in this object's buffer (one per thread),
// widened from bfloat16 and, with `logistic` (the head's mask logits), passed through the sigmoid.
class TileInput {
 public:
  TileInput(const Tensor& t, int64_t stride, int64_t first, int64_t width, bool logistic = false)
      : stride_(stride), first_(first), width_(width), logistic_(logistic) {
    if (t.dtype() == tensorflow::DT_FLOAT) {
      f32_ = t.flat<float>().data();
    } else {
      bf16_ = t.flat<Eigen::bfloat16>().data();
    }
  }
  TileInput(const Tensor& t, int64_t width) : TileInput(t, width, 0, width) {}
  const float* rows(int64_t p0, int64_t n) {
    if (f32_ != nullptr && stride_ == width_ && !logistic_) return f32_ + p0 * width_;
    buffer_.resize(n * width_);
    for (int64_t i = 0; i < (stride_ == width_ ? 1 : n); ++i) {  // whole rows: one run
      const int64_t count = stride_ == width_ ? n * width_ : width_, at = (p0 + i) * stride_ + first_;
      if (f32_ != nullptr) {
        std::copy(f32_ + at, f32_ + at + count, buffer_.data() + i * width_);
      } else {
        widen(bf16_ + at, buffer_.data() + i * width_, count);
      }
    }
    if (logistic_) logistic(buffer_.data(), n * width_);
    return buffer_.data();
  }

 private:
  int64_t stride_, first_, width_;
  bool logistic_;
  const float* f32_ = nullptr;
  const Eigen::bfloat16* bf16_ = nullptr;
  std::vector<float> buffer_;
};

// Where a tile's rows of columns [first, first + width) of a (pixels, stride) output are computed in
// float: the tensor's own rows (float32, all its columns), or this object's buffer, copied or narrowed
// into the tensor by flush().
class TileOutput {
 public:
  TileOutput(Tensor* t, int64_t stride, int64_t first, int64_t width) : stride_(stride), first_(first), width_(width) {
    if (t->dtype() == tensorflow::DT_FLOAT) {
      f32_ = t->flat<float>().data();
    } else {
      bf16_ = t->flat<Eigen::bfloat16>().data();
    }
  }
  TileOutput(Tensor* t, int64_t width) : TileOutput(t, width, 0, width) {}
  float* rows(int64_t p0, int64_t n) {
    p0_ = p0;
    n_ = n;
    if (direct()) return f32_ + p0 * width_;
    buffer_.resize(n * width_);
    return buffer_.data();
  }
  void flush() const {
    if (direct()) return;
    for (int64_t i = 0; i < (stride_ == width_ ? 1 : n_); ++i) {
      const int64_t count = stride_ == width_ ? n_ * width_ : width_, at = (p0_ + i) * stride_ + first_;
      const float* src = buffer_.data() + i * width_;
      if (f32_ != nullptr) {
        std::copy(src, src + count, f32_ + at);
      } else {
        narrow_to(src, bf16_ + at, count);
      }
    }
  }

 private:
  bool direct() const { return f32_ != nullptr && stride_ == width_; }
  int64_t stride_, first_, width_, p0_ = 0, n_ = 0;
  float* f32_ = nullptr;
  Eigen::bfloat16* bf16_ = nullptr;
  std::vector<float> buffer_;
};

// The planar copy of x, or nothing (null data) where the AVX-512 path is not taken.
std::unique_ptr<ScratchFloats> to_planar(OpKernelContext* ctx, const Geometry& g, const Planar& pl, const float* x,
                                        tensorflow::thread::ThreadPool* pool) {
  if (!use_planar(g, pl)) return nullptr;
  auto out = std::make_unique<ScratchFloats>(ctx, g.b * pl.image);
  float* data = out->data();
  if (data == nullptr) return nullptr;  // out of memory: the portable path needs no copy
  pool->ParallelFor(g.b * g.h, g.w * g.c * 4, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      const float* src = x + r * g.w * g.c;
      float* dst = data + r / g.h * pl.image + pl.at(r % g.h, 0);
      for (int64_t i = 0; i < g.w; ++i)
        for (int64_t c = 0; c < g.c; ++c) dst[c * pl.plane + i] = src[i * g.c + c];
    }
  });
  return out;
}

// Bilinear samples of every (group, tap) of one pixel (the portable path; the AVX-512 one is
// sample_block). A corner outside the image has weight 0 and a clamped (valid) index;
// a corner counts when it lies inside, so partial corners (-1 < y < H) count.
struct Samples {
  explicit Samples(int64_t n) : index(4 * n), weight(4 * n), ly(n), lx(n), inside(4 * n), n(n) {}
  std::vector<int32_t> index;  // corner-major: index[corner * n + j], pixel index y * W + x
  std::vector<float> weight, ly, lx, inside;
  int64_t n;

  void compute(const Geometry& g, const TapTable& tt, const float* off, int64_t y, int64_t x) {
    const float fy0 = static_cast<float>(y), fx0 = static_cast<float>(x);
    const float hmax = static_cast<float>(g.h) + 1.f, wmax = static_cast<float>(g.w) + 1.f;
    const int32_t h = static_cast<int32_t>(g.h), w = static_cast<int32_t>(g.w);
    int32_t *i0 = index.data(), *i1 = i0 + n, *i2 = i1 + n, *i3 = i2 + n;
    float *w0 = weight.data(), *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;
    float *v0 = inside.data(), *v1 = v0 + n, *v2 = v1 + n, *v3 = v2 + n;
    const float *ty = tt.ty.data(), *tx = tt.tx.data();
    float *lyp = ly.data(), *lxp = lx.data();
    for (int64_t j = 0; j < n; ++j) {
      // clamping to [-2, H + 1] changes no weight and keeps the int conversion defined
      const float py = std::min(std::max(fy0 + ty[j] + off[2 * j], -2.f), hmax);
      const float px = std::min(std::max(fx0 + tx[j] + off[2 * j + 1], -2.f), wmax);
      const float fy = std::floor(py), fx = std::floor(px);
      const float a = py - fy, b = px - fx;
      const int32_t y0 = static_cast<int32_t>(fy), x0 = static_cast<int32_t>(fx);
      const float vy0 = (y0 >= 0 && y0 < h) ? 1.f : 0.f, vy1 = (y0 + 1 >= 0 && y0 + 1 < h) ? 1.f : 0.f;
      const float vx0 = (x0 >= 0 && x0 < w) ? 1.f : 0.f, vx1 = (x0 + 1 >= 0 && x0 + 1 < w) ? 1.f : 0.f;
      const int32_t yc0 = std::min(std::max(y0, 0), h - 1), yc1 = std::min(std::max(y0 + 1, 0), h - 1);
      const int32_t xc0 = std::min(std::max(x0, 0), w - 1), xc1 = std::min(std::max(x0 + 1, 0), w - 1);
      i0[j] = yc0 * w + xc0;
      i1[j] = yc0 * w + xc1;
      i2[j] = yc1 * w + xc0;
      i3[j] = yc1 * w + xc1;
      v0[j] = vy0 * vx0;
      v1[j] = vy0 * vx1;
      v2[j] = vy1 * vx0;
      v3[j] = vy1 * vx1;
      w0[j] = (1.f - a) * (1.f - b) * v0[j];
      w1[j] = (1.f - a) * b * v1[j];
      w2[j] = a * (1.f - b) * v2[j];
      w3[j] = a * b * v3[j];
      lyp[j] = a;
      lxp[j] = b;
    }
  }
};

#if VCAR_AVX512
// AVX-512 path for one channel per deformable group (every model here), on a zero-padded planar
// copy of the input (Planar): 16 (group, tap) samples of one pixel at a time, each row's two
// corners read as one 64-bit gather element. Same arithmetic as Samples::compute, where a corner
// outside the image reads 0 instead of being masked.

// 16 lanes' bilinear weights: what the planar and the pointwise paths share.
struct Bilinear {
  __m512 w[4], a, b;  // corner weights: (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)
  __mmask16 k;  // lanes in use
};

// The value sampled from the corners q, times the mask: the im2col column of the block's lanes.
__attribute__((always_inline)) inline __m512 sampled(const Bilinear& blk, const __m512 q[4]) {
  __m512 v = _mm512_setzero_ps();
  for (int corner = 0; corner < 4; ++corner) v = _mm512_fmadd_ps(blk.w[corner], q[corner], v);
  return v;
}

// Backward of a block of lanes [j, j + n) of one pixel with corners q: its im2col column (row), mask and
// offset gradients (dm, dof); returns the gradient reaching the sampled value, gcol * mask, which the
// caller spreads over the corners by their weights.
__attribute__((always_inline)) inline __m512 column_gradients(const Bilinear& blk, const __m512 q[4], int64_t j,
                                                              int64_t n, const float* drow, const float* m, float* row,
                                                              float* dm, float* dof) {
  const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi_idx = _mm512_add_epi32(lo_idx, _mm512_set1_epi32(8));
  const __m512 one_f = _mm512_set1_ps(1.f);
  const __m512 gcol = _mm512_maskz_loadu_ps(blk.k, drow + j);  // column j
  const __m512 mj = _mm512_maskz_loadu_ps(blk.k, m + j);
  const __m512 v = sampled(blk, q);
  const __m512 ia = _mm512_sub_ps(one_f, blk.a), ib = _mm512_sub_ps(one_f, blk.b);
  // d(weight)/dy per corner: -(1-b), -b, (1-b), b; d/dx: -(1-a), (1-a), -a, a
  const __m512 vy = _mm512_add_ps(_mm512_mul_ps(ib, _mm512_sub_ps(q[2], q[0])), _mm512_mul_ps(blk.b, _mm512_sub_ps(q[3], q[1])));
  const __m512 vx = _mm512_add_ps(_mm512_mul_ps(ia, _mm512_sub_ps(q[1], q[0])), _mm512_mul_ps(blk.a, _mm512_sub_ps(q[3], q[2])));
  _mm512_mask_storeu_ps(row + j, blk.k, _mm512_mul_ps(mj, v));
  _mm512_mask_storeu_ps(dm + j, blk.k, _mm512_mul_ps(gcol, v));
  const __m512 gy = _mm512_mul_ps(_mm512_mul_ps(gcol, vy), mj), gx = _mm512_mul_ps(_mm512_mul_ps(gcol, vx), mj);
  _mm512_mask_storeu_ps(dof + 2 * j, first_lanes(2 * n), _mm512_permutex2var_ps(gy, lo_idx, gx));
  _mm512_mask_storeu_ps(dof + 2 * j + 16, first_lanes(2 * n - 16), _mm512_permutex2var_ps(gy, hi_idx, gx));
  return _mm512_mul_ps(gcol, mj);
}

struct Block : Bilinear {
  __m512i index;  // planar index of corner (y0, x0) in its channel's plane
  __m512i y0, x0;  // corner (y0, x0) in the image
};

// Lanes [j, j + n) of one pixel (y, x) sampled at their taps plus their offsets, clamped to [-2, H + 1]
// and [-2, W + 1]: the weights and fractions into blk, and the top-left corners' rows and columns.
__attribute__((always_inline)) inline void bilinear_weights(const Geometry& g, const TapTable& tt, const float* off,
                                                            int64_t y, int64_t x, int64_t j, int64_t n, Bilinear* blk,
                                                            __m512i* y0, __m512i* x0) {
  blk->k = first_lanes(n);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512 lo = _mm512_maskz_loadu_ps(first_lanes(2 * n), off + 2 * j);
  const __m512 hi = _mm512_maskz_loadu_ps(first_lanes(2 * n - 16), off + 2 * j + 16);
  __m512 py = _mm512_add_ps(_mm512_add_ps(_mm512_set1_ps(static_cast<float>(y)), _mm512_maskz_loadu_ps(blk->k, tt.ty.data() + j)),
                            _mm512_permutex2var_ps(lo, even, hi));
  __m512 px = _mm512_add_ps(_mm512_add_ps(_mm512_set1_ps(static_cast<float>(x)), _mm512_maskz_loadu_ps(blk->k, tt.tx.data() + j)),
                            _mm512_permutex2var_ps(lo, odd, hi));
  py = _mm512_min_ps(_mm512_max_ps(py, _mm512_set1_ps(-2.f)), _mm512_set1_ps(static_cast<float>(g.h) + 1.f));
  px = _mm512_min_ps(_mm512_max_ps(px, _mm512_set1_ps(-2.f)), _mm512_set1_ps(static_cast<float>(g.w) + 1.f));
  const __m512 fy = _mm512_roundscale_ps(py, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __m512 fx = _mm512_roundscale_ps(px, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  blk->a = _mm512_sub_ps(py, fy);
  blk->b = _mm512_sub_ps(px, fx);
  *y0 = _mm512_cvttps_epi32(fy);
  *x0 = _mm512_cvttps_epi32(fx);
  const __m512 one_f = _mm512_set1_ps(1.f);
  const __m512 wy[2] = {_mm512_sub_ps(one_f, blk->a), blk->a}, wx[2] = {_mm512_sub_ps(one_f, blk->b), blk->b};
  for (int corner = 0; corner < 4; ++corner) blk->w[corner] = _mm512_mul_ps(wy[corner >> 1], wx[corner & 1]);
}

__attribute__((always_inline)) inline Block sample_block(const Geometry& g, const Planar& pl, const TapTable& tt,
                                                         const float* off, int64_t y, int64_t x, int64_t j, int64_t n) {
  Block blk;
  bilinear_weights(g, tt, off, y, x, j, n, &blk, &blk.y0, &blk.x0);
  const __m512i two = _mm512_set1_epi32(2);
  const __m512i row = _mm512_add_epi32(blk.y0, two), col = _mm512_add_epi32(blk.x0, two);
  const __m512i plane = _mm512_maskz_loadu_epi32(blk.k, tt.channel.data() + j);  // times pl.plane below
  blk.index = _mm512_add_epi32(_mm512_add_epi32(_mm512_mullo_epi32(row, _mm512_set1_epi32(static_cast<int32_t>(pl.wp))), col),
                               _mm512_mullo_epi32(plane, _mm512_set1_epi32(static_cast<int32_t>(pl.plane))));
  return blk;
}

// The two corners of one row (index, index + 1) of 16 lanes: 2 gathers of 8 pairs, deinterleaved.
__attribute__((always_inline)) inline void gather_row(const float* image, __m512i index, __mmask16 k, __m512* left,
                                                      __m512* right) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i z = _mm512_setzero_si512();
  const __m512 p0 = _mm512_castsi512_ps(
      _mm512_mask_i32gather_epi64(z, static_cast<__mmask8>(k), _mm512_castsi512_si256(index), image, 4));
  const __m512 p1 = _mm512_castsi512_ps(
      _mm512_mask_i32gather_epi64(z, static_cast<__mmask8>(k >> 8), _mm512_extracti64x4_epi64(index, 1), image, 4));
  *left = _mm512_permutex2var_ps(p0, even, p1);
  *right = _mm512_permutex2var_ps(p0, odd, p1);
}

__attribute__((always_inline)) inline void gather_corners(const Planar& pl, const float* image, const Block& blk,
                                                          __m512 q[4]) {
  gather_row(image, blk.index, blk.k, &q[0], &q[1]);
  gather_row(image, _mm512_add_epi32(blk.index, _mm512_set1_epi32(static_cast<int32_t>(pl.wp))), blk.k, &q[2], &q[3]);
}

inline void forward_pixel_avx512(const Geometry& g, const Planar& pl, const TapTable& tt, const float* image,
                                 const float* off, const float* m, int64_t y, int64_t x, float* row) {
  const int64_t J = g.dg * g.taps;
  for (int64_t j = 0; j < J; j += 16) {
    const Block blk = sample_block(g, pl, tt, off, y, x, j, J - j);
    __m512 q[4];
    gather_corners(pl, image, blk, q);
    _mm512_mask_storeu_ps(row + j, blk.k, _mm512_mul_ps(_mm512_maskz_loadu_ps(blk.k, m + j), sampled(blk, q)));
  }
}

// One pixel's input-gradient adds, applied after the next pixel's are computed (measured faster
// than reading them back right after their vector stores).
struct PendingAdds {
  // room for `lanes` (group, tap) lanes, rounded up to whole vectors of 16
  explicit PendingAdds(int64_t lanes) : index((lanes + 15) / 16 * 16) {
    for (auto& r : pairs) r.resize(2 * index.size());
  }
  std::vector<int32_t> index;  // per lane: planar index of its top-left corner
  std::vector<float> pairs[2];  // per lane l: (left, right) corner gradients of row r at 2l
  float* dimage = nullptr;
  int64_t n = 0;

  // Tap-major order: a plane's next tap, whose corner pair often overlaps this one's by a float
  // (its load must wait until a partly overlapping store commits), comes deformable_groups lanes later.
  void apply(int64_t row_stride, int64_t taps) {
    for (int64_t t = 0; t < taps; ++t)
      for (int64_t l = t; l < n; l += taps)
        for (int r = 0; r < 2; ++r) {
          double* at = reinterpret_cast<double*>(dimage + index[l] + r * row_stride);
          const double* pair = reinterpret_cast<const double*>(pairs[r].data() + 2 * l);
          const __m128 sum = _mm_add_ps(_mm_castpd_ps(_mm_load_sd(at)), _mm_castpd_ps(_mm_load_sd(pair)));
          _mm_store_sd(at, _mm_castps_pd(sum));
        }
    n = 0;
  }
};

// Backward of one pixel: its im2col row, mask and offset gradients, and the input gradient into
// dimage, a zero-padded planar gradient like Planar: a corner outside the image lands in the
// padding, dropped at the end, so no corner is masked or clamped, and each row's two corners are
// one 64-bit add (a conflict-checked gather/scatter per corner measured slower).
inline void backward_pixel_avx512(const Geometry& g, const Planar& pl, const TapTable& tt, const float* image,
                                  const float* off, const float* m, int64_t y, int64_t x, const float* drow, float* row,
                                  float* dimage, float* dm, float* dof, PendingAdds* adds) {
  const int64_t J = g.dg * g.taps;
  adds->dimage = dimage;
  adds->n = J;
  const __m512i lo_idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi_idx = _mm512_add_epi32(lo_idx, _mm512_set1_epi32(8));
  for (int64_t j = 0; j < J; j += 16) {
    const int64_t n = std::min<int64_t>(16, J - j);
    const Block blk = sample_block(g, pl, tt, off, y, x, j, n);
    __m512 q[4];
    gather_corners(pl, image, blk, q);
    const __m512 gm = column_gradients(blk, q, j, n, drow, m, row, dm, dof);
    for (int r = 0; r < 2; ++r) {
      const __m512 left = _mm512_mul_ps(gm, blk.w[2 * r]), right = _mm512_mul_ps(gm, blk.w[2 * r + 1]);
      _mm512_storeu_ps(adds->pairs[r].data() + 2 * j, _mm512_permutex2var_ps(left, lo_idx, right));
      _mm512_storeu_ps(adds->pairs[r].data() + 2 * j + 16, _mm512_permutex2var_ps(left, hi_idx, right));
    }
    _mm512_storeu_si512(adds->index.data() + j, blk.index);
  }
}

// The pointwise path (use_pointwise): lane j is channel j, sampled from the NHWC image itself. The 16
// lanes of a block are 16 channels, so their corners never share an address: masked gathers read them
// (a corner outside the image reads 0, as the planar path's padding) and the input gradient is added by
// gather, add, scatter. The planar path's arithmetic, but the input gradient's multiply and add are one
// fused multiply-add (written out, so the bits do not depend on what the compiler inlines).
struct PointBlock : Bilinear {
  __mmask16 inside[4];  // per corner, the lanes whose corner lies inside the image
  __m512i index[4];  // NHWC index of each corner in the image
};

__attribute__((always_inline)) inline PointBlock sample_point(const Geometry& g, const TapTable& tt, const float* off,
                                                              int64_t y, int64_t x, int64_t j, int64_t n) {
  PointBlock blk;
  __m512i y0, x0;
  bilinear_weights(g, tt, off, y, x, j, n, &blk, &y0, &x0);
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i h = _mm512_set1_epi32(static_cast<int32_t>(g.h)), w = _mm512_set1_epi32(static_cast<int32_t>(g.w));
  const __m512i y1 = _mm512_add_epi32(y0, one), x1 = _mm512_add_epi32(x0, one);
  // unsigned compares: a negative coordinate is a large unsigned one, outside too
  const __mmask16 in_y[2] = {_mm512_cmplt_epu32_mask(y0, h), _mm512_cmplt_epu32_mask(y1, h)};
  const __mmask16 in_x[2] = {_mm512_cmplt_epu32_mask(x0, w), _mm512_cmplt_epu32_mask(x1, w)};
  const __m512i c = _mm512_set1_epi32(static_cast<int32_t>(g.c));
  const __m512i channel = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(j)),
                                           _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  const __m512i at = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_add_epi32(_mm512_mullo_epi32(y0, w), x0), c), channel);
  blk.index[0] = at;
  blk.index[1] = _mm512_add_epi32(at, c);
  blk.index[2] = _mm512_add_epi32(at, _mm512_mullo_epi32(w, c));
  blk.index[3] = _mm512_add_epi32(blk.index[2], c);
  for (int corner = 0; corner < 4; ++corner) blk.inside[corner] = blk.k & in_y[corner >> 1] & in_x[corner & 1];
  return blk;
}

__attribute__((always_inline)) inline void gather_point(const float* image, const PointBlock& blk, __m512 q[4]) {
  for (int corner = 0; corner < 4; ++corner)
    q[corner] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), blk.inside[corner], blk.index[corner], image, 4);
}

inline void forward_pixel_pointwise(const Geometry& g, const TapTable& tt, const float* image, const float* off,
                                    const float* m, int64_t y, int64_t x, float* row) {
  for (int64_t j = 0; j < g.c; j += 16) {
    const PointBlock blk = sample_point(g, tt, off, y, x, j, g.c - j);
    __m512 q[4];
    gather_point(image, blk, q);
    _mm512_mask_storeu_ps(row + j, blk.k, _mm512_mul_ps(_mm512_maskz_loadu_ps(blk.k, m + j), sampled(blk, q)));
  }
}

// Backward of one pixel on the pointwise path: as backward_pixel_avx512, with dimage the NHWC gradient.
inline void backward_pixel_pointwise(const Geometry& g, const TapTable& tt, const float* image, const float* off,
                                     const float* m, int64_t y, int64_t x, const float* drow, float* row, float* dimage,
                                     float* dm, float* dof) {
  for (int64_t j = 0; j < g.c; j += 16) {
    const int64_t n = std::min<int64_t>(16, g.c - j);
    const PointBlock blk = sample_point(g, tt, off, y, x, j, n);
    __m512 q[4];
    gather_point(image, blk, q);
    const __m512 gm = column_gradients(blk, q, j, n, drow, m, row, dm, dof);
    for (int corner = 0; corner < 4; ++corner) {
      const __m512 sum = _mm512_fmadd_ps(
          gm, blk.w[corner],
          _mm512_mask_i32gather_ps(_mm512_setzero_ps(), blk.inside[corner], blk.index[corner], dimage, 4));
      _mm512_mask_i32scatter_ps(dimage, blk.inside[corner], blk.index[corner], sum, 4);
    }
  }
}
#endif

// im2col of pixels [p0, p0 + n): cols (n, col_width), masked samples; offset and mask are the tile's rows.
void build_columns(const Geometry& g, const TapTable& tt, const float* x, const float* offset, const float* mask,
                   int64_t p0, int64_t n, float* cols, Samples* s, const Planar& pl, const float* planar) {
  const int64_t J = s->n, C = g.c;
  const int32_t *i0 = s->index.data(), *i1 = i0 + J, *i2 = i1 + J, *i3 = i2 + J;
  const float *w0 = s->weight.data(), *w1 = w0 + J, *w2 = w1 + J, *w3 = w2 + J;
  const int32_t* channel = tt.channel.data();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p = p0 + i, hw = p % (g.h * g.w), y = hw / g.w, xx = hw % g.w;
    const float* image = x + (p - hw) * C;
    const float* m = mask + i * J;
    float* row = cols + i * g.col_width;
#if VCAR_AVX512
    if (use_pointwise(g)) {
      forward_pixel_pointwise(g, tt, image, offset + i * 2 * J, m, y, xx, row);
      continue;
    }
    if (planar) {
      forward_pixel_avx512(g, pl, tt, planar + (p - hw) / (g.h * g.w) * pl.image, offset + i * 2 * J, m, y, xx, row);
      continue;
    }
#endif
    s->compute(g, tt, offset + i * 2 * J, y, xx);
    for (int64_t j = 0; j < J; ++j) {
      const float* c0 = image + static_cast<int64_t>(i0[j]) * C + channel[j];
      const float* c1 = image + static_cast<int64_t>(i1[j]) * C + channel[j];
      const float* c2 = image + static_cast<int64_t>(i2[j]) * C + channel[j];
      const float* c3 = image + static_cast<int64_t>(i3[j]) * C + channel[j];
      for (int64_t c = 0; c < g.cd; ++c)
        row[(channel[j] + c) * g.taps + j % g.taps] = m[j] * (w0[j] * c0[c] + w1[j] * c1[c] + w2[j] * c2[c] + w3[j] * c3[c]);
    }
  }
}

// Kernel row (t * cg + c) <-> im2col column order (c * taps + t) within a group: the row of
// each column, so kernel_rows[c * taps + t] = kernel[row_of_column[...]] and back for its gradient.
std::vector<int64_t> kernel_row_of_column(const Geometry& g) {
  std::vector<int64_t> row(g.taps * g.cg);
  for (int64_t c = 0; c < g.cg; ++c)
    for (int64_t t = 0; t < g.taps; ++t) row[c * g.taps + t] = t * g.cg + c;
  return row;
}

// The CPU kernels' geometry: with one group, the im2col row (col_width) is rounded up to a
// multiple of 16 with zero columns (and the kernel with zero rows), so that Eigen's GEMM works on
// whole register blocks; each group's block of columns is col_width / groups wide.
Geometry padded_columns(const Geometry& g) {
  Geometry p = g;
  if (g.groups == 1) p.col_width = (g.col_width + 15) / 16 * 16;
  return p;
}

std::vector<float> kernel_in_column_order(const Geometry& g, const float* kernel) {
  const std::vector<int64_t> row = kernel_row_of_column(g);
  std::vector<float> out(g.col_width / g.groups * g.o, 0.f);
  for (size_t r = 0; r < row.size(); ++r) std::copy(kernel + row[r] * g.o, kernel + (row[r] + 1) * g.o, out.data() + r * g.o);
  return out;
}

// The tile readers of the offsets and masks: two inputs, or one head (offsets, then mask logits).
struct OffsetMaskInputs {
  TileInput offsets, masks;
  OffsetMaskInputs(OpKernelContext* ctx, bool head, int64_t lanes)
      : offsets(ctx->input(1), head ? 3 * lanes : 2 * lanes, 0, 2 * lanes),
        masks(ctx->input(head ? 1 : 2), head ? 3 * lanes : lanes, head ? 2 * lanes : 0, lanes, head) {}
};

class DeformConv2DOp : public DeformConvKernel {
 public:
  explicit DeformConv2DOp(tensorflow::OpKernelConstruction* ctx, bool head = false) : DeformConvKernel(ctx, head) {}

  void Compute(OpKernelContext* ctx) override {
    DeformIO io;
    OP_REQUIRES_OK(ctx, prepare(ctx, false, &io));
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    Bf16Staging bf16(ctx, pool);
    OP_REQUIRES_OK(ctx, bf16.stage(&io));
    const Geometry g = padded_columns(io.g);
    const int64_t width = g.col_width / g.groups;
    const float *px = io.x, *pk = io.kernel, *pb = io.last;
    const int64_t lanes = g.dg * g.taps;
    const TapTable tt = tap_table(g);
    const std::vector<float> kernel_rows = kernel_in_column_order(g, pk);
    const int64_t tiles = (g.pixels + kTile - 1) / kTile;
    const Planar pl(g);
    const std::unique_ptr<ScratchFloats> planar = to_planar(ctx, g, pl, px, pool);
    pool->ParallelFor(tiles, kTile * g.col_width * g.o, [&](int64_t first, int64_t last) {
      std::vector<float> cols(kTile * g.col_width);
      Samples samples(lanes);
      OffsetMaskInputs in(ctx, head_, lanes);
      TileOutput out(ctx->mutable_output(0), g.o);
      for (int64_t tile = first; tile < last; ++tile) {
        const int64_t p0 = tile * kTile, n = std::min(kTile, g.pixels - p0);
        build_columns(g, tt, px, in.offsets.rows(p0, n), in.masks.rows(p0, n), p0, n, cols.data(), &samples, pl,
                      planar ? planar->data() : nullptr);
        Map y(out.rows(p0, n), n, g.o, Eigen::OuterStride<>(g.o));
        ConstMap c(cols.data(), n, g.col_width, Eigen::OuterStride<>(g.col_width));
        ConstMap wk(kernel_rows.data(), width, g.o, Eigen::OuterStride<>(g.o));
        for (int64_t grp = 0; grp < g.groups; ++grp)
          y.block(0, grp * g.og, n, g.og).noalias() =
              c.block(0, grp * width, n, width) * wk.block(0, grp * g.og, width, g.og);
        y.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(pb, g.o);
        out.flush();
      }
    });
  }
};

class DeformConv2DGradOp : public DeformConvKernel {
 public:
  explicit DeformConv2DGradOp(tensorflow::OpKernelConstruction* ctx, bool head = false)
      : DeformConvKernel(ctx, head) {}

  void Compute(OpKernelContext* ctx) override {
    DeformIO io;
    OP_REQUIRES_OK(ctx, prepare(ctx, true, &io));
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    Bf16Staging bf16(ctx, pool);
    OP_REQUIRES_OK(ctx, bf16.stage(&io));
    const Geometry g = padded_columns(io.g);
    const int64_t width = g.col_width / g.groups;
    const float *px = io.x, *pk = io.kernel;
    float *pdx = io.out[0], *pdk = io.out[3], *pdb = io.out[4];
    const int64_t lanes = g.dg * g.taps;
    const TapTable tt = tap_table(g);
    const std::vector<float> kernel_rows = kernel_in_column_order(g, pk);
    const int64_t tiles = (g.pixels + kTile - 1) / kTile;
    const Planar pl(g);
    std::unique_ptr<ScratchFloats> planar = to_planar(ctx, g, pl, px, pool);
    // One chunk per thread; each chunk keeps its own input/kernel/bias gradient (samples of any
    // pixel may land anywhere in the image), summed at the end. The input gradient is a planar
    // padded one per chunk on the AVX-512 path; otherwise chunk 0 accumulates it in the output
    // itself. Offset and mask gradients belong to one pixel each, so chunks write them directly.
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(pool->NumThreads(), tiles));
    const int64_t x_size = g.pixels * g.c, k_size = width * g.o;
    std::vector<std::unique_ptr<ScratchFloats>> dx_planar;
    for (int64_t chunk = 0; planar && chunk < chunks; ++chunk) {
      dx_planar.push_back(std::make_unique<ScratchFloats>(ctx, g.b * pl.image));
      if (dx_planar.back()->data() == nullptr) planar.reset();  // out of memory: the portable path
    }
    if (!planar) dx_planar.clear();
    // otherwise chunks after the first accumulate the input gradient in NHWC scratch, zeroed by their thread
    std::vector<std::unique_ptr<ScratchFloats>> dx_part;
    for (int64_t chunk = 1; !planar && chunk < chunks; ++chunk) {
      dx_part.push_back(std::make_unique<ScratchFloats>(ctx, x_size, false));
      OP_REQUIRES(ctx, dx_part.back()->data() != nullptr,
                  tensorflow::errors::ResourceExhausted("deform conv: no memory for the input gradient"));
    }
    std::vector<std::vector<float>> dk_part(chunks), db_part(chunks);
    pool->ParallelFor(chunks, 1LL << 40, [&](int64_t first, int64_t last) {
      for (int64_t chunk = first; chunk < last; ++chunk) {
        float* dxc = pdx;
        if (planar) {
          dxc = dx_planar[chunk]->data();
        } else if (chunk > 0) {
          dxc = dx_part[chunk - 1]->data();
          std::fill(dxc, dxc + x_size, 0.f);
        } else {
          std::fill(pdx, pdx + x_size, 0.f);
        }
        std::vector<float>& dkc = dk_part[chunk];
        std::vector<float>& dbc = db_part[chunk];
        dkc.assign(k_size, 0.f);
        dbc.assign(g.o, 0.f);
        std::vector<float> cols(kTile * g.col_width), dcols(kTile * g.col_width), tile_db(g.o);
        Samples samples(lanes);
        OffsetMaskInputs in(ctx, head_, lanes);
        TileInput grads(ctx->input(head_ ? 3 : 4), g.o);
        TileOutput doffsets(ctx->mutable_output(1), head_ ? 3 * lanes : 2 * lanes, 0, 2 * lanes);
        TileOutput dmasks(ctx->mutable_output(head_ ? 1 : 2), head_ ? 3 * lanes : lanes, head_ ? 2 * lanes : 0, lanes);
        Map dk(dkc.data(), width, g.o, Eigen::OuterStride<>(g.o));
        ConstMap wk(kernel_rows.data(), width, g.o, Eigen::OuterStride<>(g.o));
        for (int64_t tile = chunk * tiles / chunks; tile < (chunk + 1) * tiles / chunks; ++tile) {
          const int64_t p0 = tile * kTile, n = std::min(kTile, g.pixels - p0);
          ConstMap c(cols.data(), n, g.col_width, Eigen::OuterStride<>(g.col_width));
          ConstMap dy(grads.rows(p0, n), n, g.o, Eigen::OuterStride<>(g.o));
          Map dc(dcols.data(), n, g.col_width, Eigen::OuterStride<>(g.col_width));
          for (int64_t grp = 0; grp < g.groups; ++grp) {
            const int64_t c0 = grp * width, o0 = grp * g.og;
            dc.block(0, c0, n, width).noalias() = dy.block(0, o0, n, g.og) * wk.block(0, o0, width, g.og).transpose();
          }
          // one sampling pass: the columns (for the kernel gradient) and every sampled gradient
          const float* m = in.masks.rows(p0, n);
          float* dm = dmasks.rows(p0, n);
          scatter(g, tt, px, in.offsets.rows(p0, n), m, p0, n, dcols.data(), cols.data(), dxc, doffsets.rows(p0, n),
                  dm, &samples, pl, planar ? planar->data() : nullptr);
          if (head_)  // the mask logits' gradient: through the sigmoid, m (1 - m)
            for (int64_t i = 0; i < n * lanes; ++i) dm[i] *= m[i] * (1.f - m[i]);
          doffsets.flush();
          dmasks.flush();
          for (int64_t grp = 0; grp < g.groups; ++grp) {
            const int64_t c0 = grp * width, o0 = grp * g.og;
            dk.block(0, o0, width, g.og).noalias() += c.block(0, c0, n, width).transpose() * dy.block(0, o0, n, g.og);
          }
          // the tile's sum row by row, then into the chunk's (Eigen's colwise().sum() gave different
          // last bits from run to run with two threads)
          std::fill(tile_db.begin(), tile_db.end(), 0.f);
          for (int64_t i = 0; i < n; ++i)
            for (int64_t o = 0; o < g.o; ++o) tile_db[o] += dy(i, o);
          for (int64_t o = 0; o < g.o; ++o) dbc[o] += tile_db[o];
        }
      }
    });
    if (planar) {
      std::vector<const float*> parts;
      for (const auto& part : dx_planar) parts.push_back(part->data());
      pool->ParallelFor(g.b * g.h, g.w * g.c * chunks, [&](int64_t first, int64_t last) {
        std::vector<float> sum(g.w);
        for (int64_t r = first; r < last; ++r) {
          const int64_t offset = r / g.h * pl.image + pl.at(r % g.h, 0);
          float* dst = pdx + r * g.w * g.c;
          for (int64_t c = 0; c < g.c; ++c) {  // a channel's row of every chunk, summed contiguously
            std::copy(parts[0] + offset + c * pl.plane, parts[0] + offset + c * pl.plane + g.w, sum.begin());
            for (size_t chunk = 1; chunk < parts.size(); ++chunk) {
              const float* part = parts[chunk] + offset + c * pl.plane;
              for (int64_t i = 0; i < g.w; ++i) sum[i] += part[i];
            }
            for (int64_t i = 0; i < g.w; ++i) dst[i * g.c + c] = sum[i];
          }
        }
      });
    } else if (!dx_part.empty()) {
      pool->ParallelFor(x_size, chunks, [&](int64_t first, int64_t last) {
        for (const auto& part : dx_part)
          for (int64_t i = first; i < last; ++i) pdx[i] += part->data()[i];
      });
    }
    std::fill(pdk, pdk + g.taps * g.cg * g.o, 0.f);
    std::fill(pdb, pdb + g.o, 0.f);
    const std::vector<int64_t> kernel_row = kernel_row_of_column(g);
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      for (size_t r = 0; r < kernel_row.size(); ++r)
        for (int64_t o = 0; o < g.o; ++o) pdk[kernel_row[r] * g.o + o] += dk_part[chunk][r * g.o + o];
      for (int64_t i = 0; i < g.o; ++i) pdb[i] += db_part[chunk][i];
    }
    bf16.narrow();
  }

 private:
  // Column gradients of pixels [p0, p0 + n) -> input, offset and mask gradients; also writes the
  // tile's im2col columns (as build_columns does) from the same samples. offset, mask, doff and dmask
  // are the tile's rows.
  static void scatter(const Geometry& g, const TapTable& tt, const float* x, const float* offset, const float* mask,
                      int64_t p0, int64_t n, const float* dcols, float* cols, float* dx, float* doff, float* dmask,
                      Samples* s, const Planar& pl, const float* planar) {
    const int64_t J = s->n, C = g.c;
    const int32_t *i0 = s->index.data(), *i1 = i0 + J, *i2 = i1 + J, *i3 = i2 + J;
    const float *w0 = s->weight.data(), *w1 = w0 + J, *w2 = w1 + J, *w3 = w2 + J;
    const float *v0 = s->inside.data(), *v1 = v0 + J, *v2 = v1 + J, *v3 = v2 + J;
    const float *ly = s->ly.data(), *lx = s->lx.data();
    const int32_t* channel = tt.channel.data();
#if VCAR_AVX512
    PendingAdds adds[2] = {PendingAdds(J), PendingAdds(J)};
#endif
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = p0 + i, hw = p % (g.h * g.w), y = hw / g.w, xx = hw % g.w;
      const float* image = x + (p - hw) * C;
      const float* m = mask + i * J;
      const float* drow = dcols + i * g.col_width;
      float* row = cols + i * g.col_width;
      float* dm = dmask + i * J;
      float* dof = doff + i * 2 * J;
#if VCAR_AVX512
      if (use_pointwise(g)) {
        backward_pixel_pointwise(g, tt, image, offset + i * 2 * J, m, y, xx, drow, row, dx + (p - hw) * C, dm, dof);
        continue;
      }
      if (planar) {
        const int64_t at = (p - hw) / (g.h * g.w) * pl.image;
        backward_pixel_avx512(g, pl, tt, planar + at, offset + i * 2 * J, m, y, xx, drow, row, dx + at, dm, dof,
                              &adds[i & 1]);
        adds[(i + 1) & 1].apply(pl.wp, g.taps);
        continue;
      }
#endif
      float* dimage = dx + (p - hw) * C;
      s->compute(g, tt, offset + i * 2 * J, y, xx);
      // d(weight)/dy of the corners is -(1-lx), -lx, (1-lx), lx (times inside); d/dx likewise.
      for (int64_t j = 0; j < J; ++j) {
        const int64_t at[4] = {static_cast<int64_t>(i0[j]) * C, static_cast<int64_t>(i1[j]) * C,
                               static_cast<int64_t>(i2[j]) * C, static_cast<int64_t>(i3[j]) * C};
        const float w[4] = {w0[j], w1[j], w2[j], w3[j]};
        const float a = ly[j], b = lx[j];
        const float dwdy[4] = {-(1.f - b) * v0[j], -b * v1[j], (1.f - b) * v2[j], b * v3[j]};
        const float dwdx[4] = {-(1.f - a) * v0[j], (1.f - a) * v1[j], -a * v2[j], a * v3[j]};
        float gm_sum = 0.f, gy = 0.f, gx = 0.f;
        for (int64_t c = channel[j]; c < channel[j] + g.cd; ++c) {
          const int64_t col = c * g.taps + j % g.taps;
          const float gcol = drow[col];
          float v = 0.f, vy = 0.f, vx = 0.f;
          for (int corner = 0; corner < 4; ++corner) {
            const float pixel = image[at[corner] + c];
            v += w[corner] * pixel;
            vy += dwdy[corner] * pixel;
            vx += dwdx[corner] * pixel;
            dimage[at[corner] + c] += gcol * m[j] * w[corner];
          }
          row[col] = m[j] * v;
          gm_sum += gcol * v;
          gy += gcol * vy;
          gx += gcol * vx;
        }
        dm[j] = gm_sum;
        dof[2 * j] = gy * m[j];
        dof[2 * j + 1] = gx * m[j];
      }
    }
#if VCAR_AVX512
    adds[(n - 1) & 1].apply(pl.wp, g.taps);
#endif
  }
};

}  // namespace vcar

VCAR_REGISTER_DEFORM_OPS("VcarDeformConv2D", "VcarDeformConv2DGrad");

#define VCAR_REGISTER_CPU(type)                                                                              \
  REGISTER_KERNEL_BUILDER(Name("VcarDeformConv2D").Device(tensorflow::DEVICE_CPU).TypeConstraint<type>("T"), \
                          vcar::DeformConv2DOp);                                                             \
  REGISTER_KERNEL_BUILDER(Name("VcarDeformConv2DGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<type>("T"), \
                          vcar::DeformConv2DGradOp)
VCAR_REGISTER_CPU(float);
VCAR_REGISTER_CPU(Eigen::bfloat16);

// The head ops (CPU only): the offset/mask conv's output whole, offsets then mask logits (3 * D * k * k
// channels), in place of offset and mask; the op takes the sigmoid of the logits itself and returns the
// head's gradient, so the model needs no split, sigmoid or their gradients' ops.
REGISTER_OP("VcarDeformConv2DHead")
    .Input("x: T")
    .Input("head: T")
    .Input("kernel: float")
    .Input("bias: float")
    .Output("y: T")
    .Attr("T: {float, bfloat16} = DT_FLOAT")
    .Attr("deformable_groups: int = 1")
    .Attr("groups: int = 1")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle x, kernel, out;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 4, &kernel));
      TF_RETURN_IF_ERROR(c->ReplaceDim(x, 3, c->Dim(kernel, 3), &out));
      c->set_output(0, out);
      return absl::OkStatus();
    });

REGISTER_OP("VcarDeformConv2DHeadGrad")
    .Input("x: T")
    .Input("head: T")
    .Input("kernel: float")
    .Input("grad: T")
    .Output("dx: T")
    .Output("dhead: T")
    .Output("dkernel: float")
    .Output("dbias: float")
    .Attr("T: {float, bfloat16} = DT_FLOAT")
    .Attr("deformable_groups: int = 1")
    .Attr("groups: int = 1")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      for (int i = 0; i < 3; ++i) c->set_output(i, c->input(i));
      tensorflow::shape_inference::ShapeHandle kernel;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 4, &kernel));
      c->set_output(3, c->Vector(c->Dim(kernel, 3)));
      return absl::OkStatus();
    });

namespace vcar {
class DeformConv2DHeadOp : public DeformConv2DOp {
 public:
  explicit DeformConv2DHeadOp(tensorflow::OpKernelConstruction* ctx) : DeformConv2DOp(ctx, true) {}
};
class DeformConv2DHeadGradOp : public DeformConv2DGradOp {
 public:
  explicit DeformConv2DHeadGradOp(tensorflow::OpKernelConstruction* ctx) : DeformConv2DGradOp(ctx, true) {}
};
}  // namespace vcar

#define VCAR_REGISTER_CPU_HEAD(type)                                                                             \
  REGISTER_KERNEL_BUILDER(Name("VcarDeformConv2DHead").Device(tensorflow::DEVICE_CPU).TypeConstraint<type>("T"), \
                          vcar::DeformConv2DHeadOp);                                                             \
  REGISTER_KERNEL_BUILDER(                                                                                       \
      Name("VcarDeformConv2DHeadGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<type>("T"),                 \
      vcar::DeformConv2DHeadGradOp)
VCAR_REGISTER_CPU_HEAD(float);
VCAR_REGISTER_CPU_HEAD(Eigen::bfloat16);
