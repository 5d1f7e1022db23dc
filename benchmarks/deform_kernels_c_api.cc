// C entry points to the deformable conv's CUDA kernels (custom_ops/deform_conv/deform_conv_gpu.h)
// without TensorFlow, for benchmarks/bench_deform_gpu.py. nvcc links them with the kernels for a
// GPU; g++ with VCAR_GPU_EMULATION runs the same kernel bodies as loops on the CPU.
// sizes: b, h, w, c, k, o, deformable groups, groups. Each returns nullptr or the error's text.
#include "deform_conv_gpu.h"

namespace {

const char* geometry_of(const int64_t* sizes, vcar::Geometry* g) {
  return vcar::make_geometry(sizes[0], sizes[1], sizes[2], sizes[3], sizes[4], sizes[5], sizes[6], sizes[7], g);
}

}  // namespace

extern "C" {

// floats[0]: the im2col scratch of both calls; floats[1]: the kernel-gradient partial sums.
const char* vcar_scratch_floats(const int64_t* sizes, int64_t* floats) {
  vcar::Geometry g;
  if (const char* error = geometry_of(sizes, &g)) return error;
  floats[0] = vcar::gpu::tile_pixels(g) * g.col_width;
  floats[1] = vcar::gpu::partial_floats(g);
  return nullptr;
}

const char* vcar_forward(const int64_t* sizes, const float* x, const float* offset, const float* mask,
                         const float* kernel, const float* bias, float* out, float* cols, void* stream) {
  vcar::Geometry g;
  if (const char* error = geometry_of(sizes, &g)) return error;
  return vcar::gpu::forward(g, x, offset, mask, kernel, bias, out, cols, stream);
}

const char* vcar_backward(const int64_t* sizes, const float* x, const float* offset, const float* mask,
                          const float* kernel, const float* grad, float* dx, float* doffset, float* dmask,
                          float* dkernel, float* dbias, float* cols, float* partial, void* stream) {
  vcar::Geometry g;
  if (const char* error = geometry_of(sizes, &g)) return error;
  return vcar::gpu::backward(g, x, offset, mask, kernel, grad, dx, doffset, dmask, dkernel, dbias, cols, partial,
                             stream);
}

}  // extern "C"
