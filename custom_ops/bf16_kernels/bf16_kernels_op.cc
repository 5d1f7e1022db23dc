// CPU kernels for TensorFlow's own ReluGrad and AddN on bfloat16, registered with a higher priority than
// TF's, so graphs instantiated after this library is loaded use them. TF's pip build runs these Eigen
// kernels without AVX-512, where bf16 arithmetic costs more than the memory it moves (a tenth of RFDA's
// bf16 training step). These compute the same values with AVX-512 where the CPU has it: each bf16 sum
// or product in float rounded to bf16, in TF's order (AddN: ((in0 + in1) + in2) ..., its groups of 8,
// and the input it forwards to the output moved to the front). NaN results are NaN, their sign and
// payload not kept (TF's own vector and scalar paths differ there).

#include <algorithm>
#include <numeric>
#include <vector>

#include "../common/bf16.h"
#include "../common/parallel.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace vcar {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using bf16 = Eigen::bfloat16;

constexpr int64_t kBlock = 4096;  // values per work unit

template <typename F>
void for_blocks(OpKernelContext* ctx, int64_t n, F f) {
  parallel_for(ctx, (n + kBlock - 1) / kBlock, kBlock * 4, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) f(b * kBlock, std::min(n, (b + 1) * kBlock));
  });
}

// dy where the feature is > 0, else dy * 0 (a signed zero): TF's gradients * (features > 0).
class ReluGradBf16Op : public OpKernel {
 public:
  explicit ReluGradBf16Op(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grads = ctx->input(0);
    const Tensor& features = ctx->input(1);
    OP_REQUIRES(ctx, grads.IsSameSize(features),
                tensorflow::errors::InvalidArgument("gradients and features must have the same shape: ",
                                                    grads.shape().DebugString(), " vs. ",
                                                    features.shape().DebugString()));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0, 1}, 0, grads.shape(), &out));
    const bf16* dy = grads.flat<bf16>().data();
    const bf16* x = features.flat<bf16>().data();
    bf16* dx = out->flat<bf16>().data();
    for_blocks(ctx, grads.NumElements(), [=](int64_t a, int64_t b) {
      int64_t i = a;
#if defined(__AVX512F__)
      const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.f);
      for (; i + 16 <= b; i += 16) {
        const __mmask16 positive = _mm512_cmp_ps_mask(widen16(x + i), zero, _CMP_GT_OQ);
        narrow16(_mm512_mul_ps(widen16(dy + i), _mm512_mask_blend_ps(positive, zero, one)), dx + i);
      }
#endif
      for (; i < b; ++i) store_as(to_float(dy[i]) * (to_float(x[i]) > 0.f ? 1.f : 0.f), dx + i);
    });
  }
};

// out[a, b) = (...((s[0] + s[1]) + s[2]) ... + s[n - 1]) over n sources s, rounded to bf16 after each add;
// with `accumulate`, out + that sum.
void add_rounded(const bf16* const* s, int n, bool accumulate, bf16* out, int64_t a, int64_t b) {
  int64_t i = a;
#if defined(__AVX512F__)
  for (; i + 16 <= b; i += 16) {
    __m512 sum = widen16(s[0] + i);
    for (int k = 1; k < n; ++k) sum = round_to_bf16(_mm512_add_ps(sum, widen16(s[k] + i)));
    if (accumulate) sum = round_to_bf16(_mm512_add_ps(widen16(out + i), sum));
    store16_exact(sum, out + i);
  }
#endif
  for (; i < b; ++i) {
    bf16 sum = s[0][i];
    for (int k = 1; k < n; ++k) store_as(to_float(sum) + to_float(s[k][i]), &sum);
    if (accumulate) store_as(to_float(out[i]) + to_float(sum), &sum);
    out[i] = sum;
  }
}

class AddNBf16Op : public OpKernel {
 public:
  explicit AddNBf16Op(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    if (!ctx->ValidateInputsAreSameShape(this)) return;
    const Tensor& input0 = ctx->input(0);
    const int num = ctx->num_inputs();
    if (num == 1) {
      ctx->set_output(0, input0);
      return;
    }
    // as TF's AddN: the first input that can be forwarded holds the output and is summed first
    std::vector<int> order(num);
    std::iota(order.begin(), order.end(), 0);
    Tensor* output = nullptr;
    for (int i = 0; i < num && output == nullptr; ++i)
      if (ctx->forward_input_to_output_with_shape(i, 0, input0.shape(), &output)) std::swap(order[0], order[i]);
    if (output == nullptr) OP_REQUIRES_OK(ctx, ctx->allocate_output(0, input0.shape(), &output));
    std::vector<const bf16*> in(num);
    for (int i = 0; i < num; ++i) in[i] = ctx->input(order[i]).flat<bf16>().data();
    bf16* out = output->flat<bf16>().data();
    // TF's groups: the first num % 8 inputs (8 if none are left over, 9 if one), then 8 at a time added to it
    int first = num % 8 == 0 ? 8 : num % 8 == 1 ? 9 : num % 8;
    for_blocks(ctx, input0.NumElements(), [&](int64_t a, int64_t b) {
      add_rounded(in.data(), first, false, out, a, b);
      for (int r = first; r < num; r += 8) add_rounded(in.data() + r, 8, true, out, a, b);
    });
  }
};

}  // namespace vcar

REGISTER_KERNEL_BUILDER(
    Name("ReluGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<Eigen::bfloat16>("T").Priority(1),
    vcar::ReluGradBf16Op);
REGISTER_KERNEL_BUILDER(
    Name("AddN").Device(tensorflow::DEVICE_CPU).TypeConstraint<Eigen::bfloat16>("T").Priority(1),
    vcar::AddNBf16Op);
