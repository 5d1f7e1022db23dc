// What the CPU and the CUDA kernels share on the TF side: shape checks and the op definitions.
#pragma once

#include "geometry.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace vcar {

using tensorflow::Tensor;
using tensorflow::errors::InvalidArgument;

#define VCAR_CHECK(cond, msg) \
  if (!(cond)) return InvalidArgument(msg)

// offset and mask, or (mask null) the head: offsets then mask logits, 3 * dg * k * k channels.
inline absl::Status geometry(const Tensor& x, const Tensor& offset, const Tensor* mask, const Tensor& kernel, int dg,
                      int groups, Geometry* g) {
  VCAR_CHECK(x.dims() == 4 && offset.dims() == 4 && (mask == nullptr || mask->dims() == 4) && kernel.dims() == 4,
             "x, offset, mask (or head) and kernel must be 4-D");
  VCAR_CHECK(kernel.dim_size(1) == kernel.dim_size(0), "kernel must be k x k with odd k");
  const char* error = make_geometry(x.dim_size(0), x.dim_size(1), x.dim_size(2), x.dim_size(3), kernel.dim_size(0),
                                    kernel.dim_size(3), dg, groups, g);
  VCAR_CHECK(error == nullptr, error);
  VCAR_CHECK(kernel.dim_size(2) * groups == g->c, "kernel input channels != C / groups");
  for (const Tensor* t : {&offset, mask})
    VCAR_CHECK(t == nullptr || t->dim_size(0) == g->b && t->dim_size(1) == g->h && t->dim_size(2) == g->w,
               "offset and mask (or head) must have the input's B, H and W");
  if (mask == nullptr) {
    VCAR_CHECK(offset.dim_size(3) == 3 * dg * g->taps, "head must have 3 * deformable_groups * k * k channels");
    return absl::OkStatus();
  }
  VCAR_CHECK(offset.dim_size(3) == 2 * dg * g->taps, "offset must have 2 * deformable_groups * k * k channels");
  VCAR_CHECK(mask->dim_size(3) == dg * g->taps, "mask must have deformable_groups * k * k channels");
  return absl::OkStatus();
}

// One call's shapes and data: x, offset, mask, kernel, then the bias (forward) or the output
// gradient (backward); the outputs y, or dx, doffset, dmask, dkernel, dbias. The head ops (CPU only)
// take the head (offsets then mask logits) in the offset slot, mask null, and return dhead in
// doffset's slot, dmask null.
// A bfloat16 input or output (T = bfloat16: x, offset, mask, grad, y, dx, doffset, dmask) has a null
// pointer here: the CPU kernel converts it (deform_conv_op.cc: x and dx whole, the others a tile at a time).
struct DeformIO {
  Geometry g;
  const float *x, *offset, *mask, *kernel, *last;
  float* out[5];
};

// Base of the CPU and CUDA kernels: the two attributes, the input checks and the outputs. `head`:
// the inputs are x, head, kernel, bias/grad (the head ops) instead of x, offset, mask, kernel, bias/grad.
class DeformConvKernel : public tensorflow::OpKernel {
 public:
  explicit DeformConvKernel(tensorflow::OpKernelConstruction* ctx, bool head = false) : OpKernel(ctx), head_(head) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("deformable_groups", &dg_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("groups", &groups_));
  }

 protected:
  // Checks the inputs and allocates the outputs: y for the forward op, the gradients for the
  // gradient op (five, or four for the head ops).
  absl::Status prepare(tensorflow::OpKernelContext* ctx, bool backward, DeformIO* io) const {
    Geometry& g = io->g;
    const int k_in = head_ ? 2 : 3;  // the kernel's input; the bias or grad follows it
    TF_RETURN_IF_ERROR(geometry(ctx->input(0), ctx->input(1), head_ ? nullptr : &ctx->input(2), ctx->input(k_in),
                                dg_, groups_, &g));
    const Tensor& last = ctx->input(k_in + 1);
    Tensor* outputs[5] = {};  // y or dx, doffset (dhead), dmask, dkernel, dbias
    if (backward) {
      VCAR_CHECK(last.dims() == 4 && last.dim_size(0) == g.b && last.dim_size(1) == g.h &&
                     last.dim_size(2) == g.w && last.dim_size(3) == g.o,
                 "grad must be (B, H, W, O)");
      int out = 0;
      for (int i = 0; i < 3; ++i)
        if (!head_ || i < 2) TF_RETURN_IF_ERROR(ctx->allocate_output(out++, ctx->input(i).shape(), &outputs[i]));
      TF_RETURN_IF_ERROR(ctx->allocate_output(out++, ctx->input(k_in).shape(), &outputs[3]));
      TF_RETURN_IF_ERROR(ctx->allocate_output(out, tensorflow::TensorShape({g.o}), &outputs[4]));
    } else {
      VCAR_CHECK(last.NumElements() == g.o, "bias must have O elements");
      TF_RETURN_IF_ERROR(ctx->allocate_output(0, tensorflow::TensorShape({g.b, g.h, g.w, g.o}), &outputs[0]));
    }
    const Tensor* inputs[5] = {&ctx->input(0), &ctx->input(1), head_ ? nullptr : &ctx->input(2), &ctx->input(k_in),
                               &last};
    const float** data[5] = {&io->x, &io->offset, &io->mask, &io->kernel, &io->last};
    for (int i = 0; i < 5; ++i) {
      const bool in_float = inputs[i] && inputs[i]->dtype() == tensorflow::DT_FLOAT;
      *data[i] = in_float ? inputs[i]->flat<float>().data() : nullptr;
      const bool out_float = outputs[i] && outputs[i]->dtype() == tensorflow::DT_FLOAT;
      io->out[i] = out_float ? outputs[i]->flat<float>().data() : nullptr;
    }
    return absl::OkStatus();
  }

  bool head_;
  int dg_, groups_;
};

}  // namespace vcar

// REGISTER_OP for the forward op and its gradient under the given names (the same signature for
// the real ops and the test-only emulation of the CUDA kernels). T is bfloat16 only on the CPU;
// kernel, bias and their gradients are float32 either way.
#define VCAR_REGISTER_DEFORM_OPS(forward_name, grad_name) \
REGISTER_OP(forward_name) \
    .Input("x: T") \
    .Input("offset: T") \
    .Input("mask: T") \
    .Input("kernel: float") \
    .Input("bias: float") \
    .Output("y: T") \
    .Attr("T: {float, bfloat16} = DT_FLOAT") \
    .Attr("deformable_groups: int = 1") \
    .Attr("groups: int = 1") \
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) { \
      tensorflow::shape_inference::ShapeHandle x, kernel, out; \
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x)); \
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 4, &kernel)); \
      TF_RETURN_IF_ERROR(c->ReplaceDim(x, 3, c->Dim(kernel, 3), &out)); \
      c->set_output(0, out); \
      return absl::OkStatus(); \
    }); \
 \
REGISTER_OP(grad_name) \
    .Input("x: T") \
    .Input("offset: T") \
    .Input("mask: T") \
    .Input("kernel: float") \
    .Input("grad: T") \
    .Output("dx: T") \
    .Output("doffset: T") \
    .Output("dmask: T") \
    .Output("dkernel: float") \
    .Output("dbias: float") \
    .Attr("T: {float, bfloat16} = DT_FLOAT") \
    .Attr("deformable_groups: int = 1") \
    .Attr("groups: int = 1") \
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) { \
      for (int i = 0; i < 4; ++i) c->set_output(i, c->input(i)); \
      tensorflow::shape_inference::ShapeHandle kernel; \
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 4, &kernel)); \
      c->set_output(4, c->Vector(c->Dim(kernel, 3))); \
      return absl::OkStatus(); \
    })
