// CUDA kernels of the fused deformable convolution, behind plain-pointer launchers (no TF or CUDA
// headers here). deform_conv_gpu.cu.cc is compiled by nvcc for the GPU op and, for the tests, by
// g++ with VCAR_GPU_EMULATION, where the same kernel bodies run as loops on the CPU.
#pragma once

#include <algorithm>
#include <cstdint>

#include "geometry.h"

namespace vcar {
namespace gpu {

// im2col floats per tile (64 MB) and pixels per partial sum of the kernel gradient; the tests'
// CPU emulation makes both tiny so that small inputs cross several tiles and slices.
#ifndef VCAR_GPU_COLUMN_FLOATS
#define VCAR_GPU_COLUMN_FLOATS (int64_t{1} << 24)
#endif
#ifndef VCAR_GPU_SLICE
#define VCAR_GPU_SLICE 1024
#endif
constexpr int64_t kColumnFloats = VCAR_GPU_COLUMN_FLOATS;
constexpr int64_t kSlice = VCAR_GPU_SLICE;

// Pixels per tile: the tile's im2col block holds at most kColumnFloats.
inline int64_t tile_pixels(const Geometry& g) {
  return std::max<int64_t>(1, std::min<int64_t>(g.pixels, kColumnFloats / g.col_width));
}

inline int64_t slices_per_tile(const Geometry& g) { return (tile_pixels(g) + kSlice - 1) / kSlice; }

// Floats of the backward's second scratch: the kernel-gradient partial sums, one (taps * cg + 1) x O
// block per slice (the extra row is the bias), then the kernel transposed (O x taps * cg).
inline int64_t partial_floats(const Geometry& g) {
  return slices_per_tile(g) * (g.taps * g.cg + 1) * g.o + g.taps * g.cg * g.o;
}

// Each returns nullptr or the CUDA error's text. `stream` is a cudaStream_t (unused when emulated).
// cols: tile_pixels(g) * g.col_width floats of scratch; partial: partial_floats(g).
const char* forward(const Geometry& g, const float* x, const float* offset, const float* mask, const float* kernel,
                    const float* bias, float* out, float* cols, void* stream);
const char* backward(const Geometry& g, const float* x, const float* offset, const float* mask, const float* kernel,
                     const float* grad, float* dx, float* doffset, float* dmask, float* dkernel, float* dbias,
                     float* cols, float* partial, void* stream);

}  // namespace gpu
}  // namespace vcar
