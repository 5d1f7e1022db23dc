// VcarSigmoidGate and its gradient VcarSigmoidGateGrad: y = x · sigmoid(logits) · channel, DSTA's output, with
// x and logits (B, H, W, C) and channel (B, 1, 1, C), float32 or bfloat16, computed in float32 (the sigmoid by
// Eigen's packet logistic, TF's Sigmoid) and rounded to the input's dtype. One pass over memory each way on
// TF's intra-op pool, 16 channels at a time with AVX-512; XLA's kernels for the same formula ran on one thread
// and left the other core idle for a tenth of a DSTA model's training step.
// Gradient, with g = sigmoid(logits) and dg = dy · g: dx = dg · channel, dlogits = dg · x · channel · (1 - g),
// dchannel = the sum over H, W of dg · x, summed per row of the image and then the rows in order, so the bits
// do not depend on the threads or on the other images of the batch.
#include <algorithm>
#include <vector>

#include "../common/bf16.h"
#include "../common/parallel.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace vcar {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::errors::InvalidArgument;

// x and logits of one shape (B, H, W, C), channel (B, 1, 1, C), and dy like x where given.
absl::Status check_shapes(const Tensor& x, const Tensor& logits, const Tensor& channel, const Tensor* dy) {
  if (x.dims() != 4) return InvalidArgument("x must be (B, H, W, C), got ", x.shape().DebugString());
  if (!logits.IsSameSize(x))
    return InvalidArgument("logits must have x's shape ", x.shape().DebugString(), ", got ",
                           logits.shape().DebugString());
  if (channel.dims() != 4 || channel.dim_size(0) != x.dim_size(0) || channel.dim_size(1) != 1 ||
      channel.dim_size(2) != 1 || channel.dim_size(3) != x.dim_size(3))
    return InvalidArgument("channel must be (B, 1, 1, C) for x ", x.shape().DebugString(), ", got ",
                           channel.shape().DebugString());
  if (dy != nullptr && !dy->IsSameSize(x))
    return InvalidArgument("dy must have x's shape ", x.shape().DebugString(), ", got ", dy->shape().DebugString());
  return absl::OkStatus();
}

// work(row) for every (image, row) of a (B, H, W, C) tensor, rows split over TF's intra-op threads.
template <typename F>
void for_rows(OpKernelContext* ctx, const Tensor& x, F work) {
  const int64_t rows = x.dim_size(0) * x.dim_size(1), cost = x.dim_size(2) * x.dim_size(3) * 16;
  parallel_for(ctx, rows, cost, [&](int64_t first, int64_t last) {
    for (int64_t row = first; row < last; ++row) work(row);
  });
}

inline float logistic(float v) { return Eigen::internal::scalar_logistic_op<float>()(v); }
#if VCAR_MASKED16
inline __m512 logistic(__m512 v) { return Eigen::internal::scalar_logistic_op<float>().packetOp(v); }
#endif

template <typename T>
class SigmoidGateOp : public OpKernel {
 public:
  explicit SigmoidGateOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &x = ctx->input(0), &logits = ctx->input(1), &channel = ctx->input(2);
    OP_REQUIRES_OK(ctx, check_shapes(x, logits, channel, nullptr));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &out));
    const int64_t h = x.dim_size(1), w = x.dim_size(2), c = x.dim_size(3);
    const T *px = x.flat<T>().data(), *pl = logits.flat<T>().data(), *pc = channel.flat<T>().data();
    T* py = out->flat<T>().data();
    for_rows(ctx, x, [&](int64_t row) {
      const T* ch = pc + row / h * c;
      for (int64_t i = row * w * c; i < (row + 1) * w * c; i += c) {
        int64_t k = 0;
#if VCAR_MASKED16
        for (; k < c; k += 16) {
          const __mmask16 m = first_lanes(c - k);
          const __m512 gated = _mm512_mul_ps(load16(px + i + k, m), logistic(load16(pl + i + k, m)));
          store16(_mm512_mul_ps(gated, load16(ch + k, m)), py + i + k, m);
        }
#endif
        for (; k < c; ++k) store_as(to_float(px[i + k]) * logistic(to_float(pl[i + k])) * to_float(ch[k]), py + i + k);
      }
    });
  }
};

template <typename T>
class SigmoidGateGradOp : public OpKernel {
 public:
  explicit SigmoidGateGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &dy = ctx->input(0), &x = ctx->input(1), &logits = ctx->input(2), &channel = ctx->input(3);
    OP_REQUIRES_OK(ctx, check_shapes(x, logits, channel, &dy));
    Tensor *dx = nullptr, *dlogits = nullptr, *dchannel = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, x.shape(), &dlogits));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, channel.shape(), &dchannel));
    const int64_t b = x.dim_size(0), h = x.dim_size(1), w = x.dim_size(2), c = x.dim_size(3);
    const T *pdy = dy.flat<T>().data(), *px = x.flat<T>().data(), *pl = logits.flat<T>().data();
    const T* pc = channel.flat<T>().data();
    T *pdx = dx->flat<T>().data(), *pdl = dlogits->flat<T>().data();
    std::vector<float> row_sums(b * h * c);  // each row's sum of dg · x
    for_rows(ctx, x, [&](int64_t row) {
      const T* ch = pc + row / h * c;
      float* sum = row_sums.data() + row * c;
      for (int64_t i = row * w * c; i < (row + 1) * w * c; i += c) {
        int64_t k = 0;
#if VCAR_MASKED16
        const __m512 one = _mm512_set1_ps(1.f);
        for (; k < c; k += 16) {
          const __mmask16 m = first_lanes(c - k);
          const __m512 g = logistic(load16(pl + i + k, m)), xv = load16(px + i + k, m), cv = load16(ch + k, m);
          const __m512 dg = _mm512_mul_ps(load16(pdy + i + k, m), g), dgx = _mm512_mul_ps(dg, xv);
          store16(_mm512_mul_ps(dg, cv), pdx + i + k, m);
          store16(_mm512_mul_ps(_mm512_mul_ps(dgx, cv), _mm512_sub_ps(one, g)), pdl + i + k, m);
          store16(_mm512_add_ps(load16(sum + k, m), dgx), sum + k, m);
        }
#endif
        for (; k < c; ++k) {
          const float g = logistic(to_float(pl[i + k])), cv = to_float(ch[k]);
          const float dg = to_float(pdy[i + k]) * g, dgx = dg * to_float(px[i + k]);
          store_as(dg * cv, pdx + i + k);
          store_as(dgx * cv * (1.f - g), pdl + i + k);
          sum[k] += dgx;
        }
      }
    });
    T* pdc = dchannel->flat<T>().data();
    for (int64_t n = 0; n < b; ++n)
      for (int64_t k = 0; k < c; ++k) {
        float total = 0.f;
        for (int64_t y = 0; y < h; ++y) total += row_sums[(n * h + y) * c + k];
        store_as(total, pdc + n * c + k);
      }
  }
};

}  // namespace vcar

REGISTER_OP("VcarSigmoidGate")
    .Input("x: T")
    .Input("logits: T")
    .Input("channel: T")
    .Output("y: T")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

REGISTER_OP("VcarSigmoidGateGrad")
    .Input("dy: T")
    .Input("x: T")
    .Input("logits: T")
    .Input("channel: T")
    .Output("dx: T")
    .Output("dlogits: T")
    .Output("dchannel: T")
    .Attr("T: {float, bfloat16}")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(3));
      return absl::OkStatus();
    });

#define VCAR_REGISTER_GATE(type)                                                                              \
  REGISTER_KERNEL_BUILDER(Name("VcarSigmoidGate").Device(tensorflow::DEVICE_CPU).TypeConstraint<type>("T"),  \
                          vcar::SigmoidGateOp<type>);                                                        \
  REGISTER_KERNEL_BUILDER(Name("VcarSigmoidGateGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<type>("T"), \
                          vcar::SigmoidGateGradOp<type>)
VCAR_REGISTER_GATE(float);
VCAR_REGISTER_GATE(Eigen::bfloat16);
