// The ops' CUDA kernels (GOOGLE_CUDA builds) or, with VCAR_GPU_EMULATION, the same kernels run on
// the CPU as the test-only ops VcarDeformConv2DEmulated / VcarDeformConv2DEmulatedGrad.

#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#include "unsupported/Eigen/CXX11/Tensor"
#endif

#include "deform_conv_gpu.h"
#include "op_common.h"

namespace vcar {

using tensorflow::OpKernelContext;
using tensorflow::TensorShape;

namespace {

void* stream_of(OpKernelContext* ctx) {
#if GOOGLE_CUDA
  return static_cast<void*>(ctx->eigen_device<Eigen::GpuDevice>().stream());
#else
  (void)ctx;
  return nullptr;
#endif
}

absl::Status scratch(OpKernelContext* ctx, int64_t floats, Tensor* t) {
  return ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({std::max<int64_t>(floats, 1)}), t);
}

float* data(Tensor* t) { return t->flat<float>().data(); }

}  // namespace

class DeformConv2DGpuOp : public DeformConvKernel {
 public:
  using DeformConvKernel::DeformConvKernel;

  void Compute(OpKernelContext* ctx) override {
    DeformIO io;
    OP_REQUIRES_OK(ctx, prepare(ctx, false, &io));
    if (io.g.pixels == 0) return;
    Tensor cols;
    OP_REQUIRES_OK(ctx, scratch(ctx, gpu::tile_pixels(io.g) * io.g.col_width, &cols));
    const char* error = gpu::forward(io.g, io.x, io.offset, io.mask, io.kernel, io.last, io.out[0], data(&cols),
                                     stream_of(ctx));
    OP_REQUIRES(ctx, error == nullptr, tensorflow::errors::Internal("deform conv CUDA kernel: ", error));
  }
};

class DeformConv2DGpuGradOp : public DeformConvKernel {
 public:
  using DeformConvKernel::DeformConvKernel;

  void Compute(OpKernelContext* ctx) override {
    DeformIO io;
    OP_REQUIRES_OK(ctx, prepare(ctx, true, &io));
    Tensor cols, partial;
    OP_REQUIRES_OK(ctx, scratch(ctx, gpu::tile_pixels(io.g) * io.g.col_width, &cols));
    OP_REQUIRES_OK(ctx, scratch(ctx, gpu::partial_floats(io.g), &partial));
    const char* error = gpu::backward(io.g, io.x, io.offset, io.mask, io.kernel, io.last, io.out[0], io.out[1],
                                      io.out[2], io.out[3], io.out[4], data(&cols), data(&partial), stream_of(ctx));
    OP_REQUIRES(ctx, error == nullptr, tensorflow::errors::Internal("deform conv CUDA kernel: ", error));
  }
};

}  // namespace vcar

#if GOOGLE_CUDA
REGISTER_KERNEL_BUILDER(Name("VcarDeformConv2D").Device(tensorflow::DEVICE_GPU).TypeConstraint<float>("T"),
                        vcar::DeformConv2DGpuOp);
REGISTER_KERNEL_BUILDER(Name("VcarDeformConv2DGrad").Device(tensorflow::DEVICE_GPU).TypeConstraint<float>("T"),
                        vcar::DeformConv2DGpuGradOp);
#elif defined(VCAR_GPU_EMULATION)
VCAR_REGISTER_DEFORM_OPS("VcarDeformConv2DEmulated", "VcarDeformConv2DEmulatedGrad");
REGISTER_KERNEL_BUILDER(Name("VcarDeformConv2DEmulated").Device(tensorflow::DEVICE_CPU).TypeConstraint<float>("T"),
                        vcar::DeformConv2DGpuOp);
REGISTER_KERNEL_BUILDER(Name("VcarDeformConv2DEmulatedGrad").Device(tensorflow::DEVICE_CPU).TypeConstraint<float>("T"),
                        vcar::DeformConv2DGpuGradOp);
#endif
