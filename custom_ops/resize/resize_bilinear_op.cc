// VcarResizeBilinear and VcarResizeBilinearGrad: tf.image.resize(method="bilinear") (half-pixel
// centres, no antialias) on NHWC float32 or bfloat16, the output in the input's dtype, on TF's
// intra-op thread pool. TF's own kernels run on one thread and return float32 for bfloat16 input, so
// a bf16 model paid a cast each way around them.
// Arithmetic is TF's, in float32: in = (out + 0.5) * (in_size / out_size) - 0.5, lower =
// max(floor(in), 0), upper = min(ceil(in), in_size - 1), lerp = in - floor(in), and
// top + (bottom - top) * y_lerp on the rows' top_left + (top_right - top_left) * x_lerp; bfloat16
// results are rounded to nearest even, as tf.cast does. With AVX-512 (BW, VL), 16 channels at a time.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../common/bf16.h"
#include "../common/parallel.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace vcar {

using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::errors::InvalidArgument;

// Where output index i of `out_size` samples an axis of `in_size`.
struct Taps {
  std::vector<int64_t> lower, upper;
  std::vector<float> lerp;
  Taps(int64_t in_size, int64_t out_size) : lower(out_size), upper(out_size), lerp(out_size) {
    const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
    for (int64_t i = 0; i < out_size; ++i) {
      const float in = (static_cast<float>(i) + 0.5f) * scale - 0.5f;
      const float in_floor = std::floor(in);
      lower[i] = std::max(static_cast<int64_t>(in_floor), int64_t{0});
      upper[i] = std::min(static_cast<int64_t>(std::ceil(in)), in_size - 1);
      lerp[i] = in - in_floor;
    }
  }
};

absl::Status check_image(const Tensor& t, const char* what) {
  if (t.dims() != 4 || t.dim_size(1) == 0 || t.dim_size(2) == 0)
    return InvalidArgument(what, " must be (B, H, W, C) with H, W > 0");
  return absl::OkStatus();
}

#if VCAR_MASKED16
// a + (b - a) * t, as the scalar code writes it
inline __m512 lerp16(__m512 a, __m512 b, __m512 t) { return _mm512_add_ps(a, _mm512_mul_ps(_mm512_sub_ps(b, a), t)); }
#endif

template <typename T>
class ResizeBilinearOp : public tensorflow::OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& image = ctx->input(0);
    const Tensor& size = ctx->input(1);
    OP_REQUIRES_OK(ctx, check_image(image, "images"));
    OP_REQUIRES(ctx, size.dims() == 1 && size.NumElements() == 2, InvalidArgument("size must be [height, width]"));
    const int64_t b = image.dim_size(0), h = image.dim_size(1), w = image.dim_size(2), c = image.dim_size(3);
    const int64_t oh = size.flat<int32_t>()(0), ow = size.flat<int32_t>()(1);
    OP_REQUIRES(ctx, oh > 0 && ow > 0, InvalidArgument("size must be positive"));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({b, oh, ow, c}), &output));
    const Taps ty(h, oh), tx(w, ow);
    const T* in = image.flat<T>().data();
    T* out = output->flat<T>().data();
    parallel_for(ctx, b * oh, ow * c * 8, [&](int64_t first, int64_t last) {
      for (int64_t row = first; row < last; ++row) {
        const int64_t n = row / oh, y = row % oh;
        const T* top = in + (n * h + ty.lower[y]) * w * c;
        const T* bottom = in + (n * h + ty.upper[y]) * w * c;
        const float yl = ty.lerp[y];
        T* dst = out + row * ow * c;
        for (int64_t x = 0; x < ow; ++x) {
          const int64_t l = tx.lower[x] * c, r = tx.upper[x] * c;
          const float xl = tx.lerp[x];
          int64_t k = 0;
#if VCAR_MASKED16
          const __m512 xl16 = _mm512_set1_ps(xl), yl16 = _mm512_set1_ps(yl);
          for (; k < c; k += 16) {
            const __mmask16 m = first_lanes(c - k);
            const __m512 t = lerp16(load16(top + l + k, m), load16(top + r + k, m), xl16);
            const __m512 bo = lerp16(load16(bottom + l + k, m), load16(bottom + r + k, m), xl16);
            store16(lerp16(t, bo, yl16), dst + x * c + k, m);
          }
#endif
          for (; k < c; ++k) {
            const float tl = to_float(top[l + k]), tr = to_float(top[r + k]);
            const float bl = to_float(bottom[l + k]), br = to_float(bottom[r + k]);
            const float t = tl + (tr - tl) * xl;
            const float bo = bl + (br - bl) * xl;
            store_as(t + (bo - t) * yl, dst + x * c + k);
          }
        }
      }
    });
  }
};

// The gradient: each work unit owns one image and a run of at most kChannels channels of the input
// gradient, summed in float32 and converted once, so no two threads add to the same value.
template <typename T>
class ResizeBilinearGradOp : public tensorflow::OpKernel {
 public:
  using OpKernel::OpKernel;
  static constexpr int64_t kChannels = 64;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad = ctx->input(0);
    const Tensor& original = ctx->input(1);
    OP_REQUIRES_OK(ctx, check_image(grad, "grads"));
    OP_REQUIRES_OK(ctx, check_image(original, "original_image"));
    const int64_t b = original.dim_size(0), h = original.dim_size(1), w = original.dim_size(2);
    const int64_t c = original.dim_size(3), oh = grad.dim_size(1), ow = grad.dim_size(2);
    OP_REQUIRES(ctx, grad.dim_size(0) == b && grad.dim_size(3) == c,
                InvalidArgument("grads and original_image must have the same batch and channels"));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, original.shape(), &output));
    const Taps ty(h, oh), tx(w, ow);
    const T* g = grad.flat<T>().data();
    T* out = output->flat<T>().data();
    const int64_t runs = (c + kChannels - 1) / kChannels;
    parallel_for(ctx, b * runs, oh * ow * std::min(c, kChannels) * 12, [&](int64_t first, int64_t last) {
      std::vector<float> sum(h * w * kChannels);
      for (int64_t unit = first; unit < last; ++unit) {
        const int64_t n = unit / runs, c0 = unit % runs * kChannels, cn = std::min(kChannels, c - c0);
        std::fill(sum.begin(), sum.end(), 0.0f);
        for (int64_t y = 0; y < oh; ++y) {
          const float yl = ty.lerp[y], yi = 1.0f - yl;
          float* top = sum.data() + ty.lower[y] * w * cn;
          float* bottom = sum.data() + ty.upper[y] * w * cn;
          const T* src = g + ((n * oh + y) * ow) * c + c0;
          for (int64_t x = 0; x < ow; ++x, src += c) {
            const int64_t l = tx.lower[x] * cn, r = tx.upper[x] * cn;
            const float xl = tx.lerp[x], xi = 1.0f - xl;
            int64_t k = 0;
#if VCAR_MASKED16
            const __m512 xi16 = _mm512_set1_ps(xi), xl16 = _mm512_set1_ps(xl);
            for (; k < cn; k += 16) {
              const __mmask16 m = first_lanes(cn - k);
              const __m512 v = load16(src + k, m);
              const __m512 vy[2] = {_mm512_mul_ps(v, _mm512_set1_ps(yi)), _mm512_mul_ps(v, _mm512_set1_ps(yl))};
              float* at[4] = {top + l + k, top + r + k, bottom + l + k, bottom + r + k};
              for (int corner = 0; corner < 4; ++corner)  // one after another: two corners may be one value
                store16(_mm512_add_ps(load16(at[corner], m), _mm512_mul_ps(vy[corner >> 1], corner & 1 ? xl16 : xi16)),
                        at[corner], m);
            }
#endif
            for (; k < cn; ++k) {
              const float v = to_float(src[k]);
              top[l + k] += v * yi * xi;
              top[r + k] += v * yi * xl;
              bottom[l + k] += v * yl * xi;
              bottom[r + k] += v * yl * xl;
            }
          }
        }
        T* dst = out + n * h * w * c + c0;
        for (int64_t p = 0; p < h * w; ++p) {
          int64_t k = 0;
#if VCAR_MASKED16
          for (; k < cn; k += 16)
            store16(load16(sum.data() + p * cn + k, first_lanes(cn - k)), dst + p * c + k, first_lanes(cn - k));
#endif
          for (; k < cn; ++k) store_as(sum[p * cn + k], dst + p * c + k);
        }
      }
    });
  }
};

}  // namespace vcar

REGISTER_OP("VcarResizeBilinear")
    .Input("images: T")
    .Input("size: int32")
    .Output("resized_images: T")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle image, size, out;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &image));
      TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(1, &size));
      TF_RETURN_IF_ERROR(c->WithRank(size, 2, &size));
      TF_RETURN_IF_ERROR(c->Concatenate(c->Vector(c->Dim(image, 0)), size, &out));
      TF_RETURN_IF_ERROR(c->Concatenate(out, c->Vector(c->Dim(image, 3)), &out));
      c->set_output(0, out);
      return absl::OkStatus();
    });

REGISTER_OP("VcarResizeBilinearGrad")
    .Input("grads: T")
    .Input("original_image: T")
    .Output("output: T")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      return absl::OkStatus();
    });

#define VCAR_REGISTER_RESIZE(type)                                                                              \
  REGISTER_KERNEL_BUILDER(Name("VcarResizeBilinear").Device(tensorflow::DEVICE_CPU).TypeConstraint<type>("T") \
                              .HostMemory("size"),                                                             \
                          vcar::ResizeBilinearOp<type>);                                                       \
  REGISTER_KERNEL_BUILDER(Name("VcarResizeBilinearGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<type>("T"), \
                          vcar::ResizeBilinearGradOp<type>)
VCAR_REGISTER_RESIZE(float);
VCAR_REGISTER_RESIZE(Eigen::bfloat16);
