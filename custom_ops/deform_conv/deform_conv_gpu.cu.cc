// CUDA kernels of the fused deformable convolution (see deform_conv_gpu.h). Same layout and
// sampling rules as the CPU kernel: im2col columns c * taps + t, a corner counts only inside the
// image, sample positions clamped to [-2, H + 1] (changes no weight).
//
// Every kernel is a grid-stride loop over a flat index with no shared memory and no barrier, so
// with VCAR_GPU_EMULATION (g++, no CUDA) each launch becomes one plain loop over the same body
// and atomicAdd a plain add: the tests run these bodies on the CPU against the composite.

#include <cmath>

#include "deform_conv_gpu.h"

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#define VCAR_DEVICE __device__ __forceinline__
#define VCAR_KERNEL __global__ void
#define VCAR_FOR(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)
#define VCAR_LAUNCH(kernel, n, stream, ...) \
  kernel<<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(__VA_ARGS__)
#elif defined(VCAR_GPU_EMULATION)
#define VCAR_DEVICE inline
#define VCAR_KERNEL void
#define VCAR_FOR(i, n) for (int64_t i = 0; i < (n); ++i)
#define VCAR_LAUNCH(kernel, n, stream, ...) kernel(__VA_ARGS__)
#else
#error "compile with nvcc, or with -DVCAR_GPU_EMULATION for the CPU emulation"
#endif

namespace vcar {
namespace gpu {
namespace {

#if defined(__CUDACC__)
constexpr int kThreads = 256;
// at least one block (a launch of none is an error), at most 2^20 (the loops stride over the rest)
unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 20)));
}
VCAR_DEVICE void add_to(float* p, float v) { atomicAdd(p, v); }
#else
VCAR_DEVICE void add_to(float* p, float v) { *p += v; }
#endif

// Bilinear corners of tap t of pixel (y, x) displaced by off[0] (dy), off[1] (dx): element
// indices (clamped, always valid), weights and their derivatives along y and x (zero outside).
struct Corners {
  int64_t index[4];
  float w[4], dwdy[4], dwdx[4];
};

VCAR_DEVICE Corners corners(const Geometry& g, const float* off, int64_t y, int64_t x, int64_t t) {
  const float py = fminf(fmaxf(static_cast<float>(y) + g.tap_y[t] + off[0], -2.f), static_cast<float>(g.h) + 1.f);
  const float px = fminf(fmaxf(static_cast<float>(x) + g.tap_x[t] + off[1], -2.f), static_cast<float>(g.w) + 1.f);
  const float fy = floorf(py), fx = floorf(px);
  const float a = py - fy, b = px - fx;
  const int64_t y0 = static_cast<int64_t>(fy), x0 = static_cast<int64_t>(fx);
  Corners c;
  for (int corner = 0; corner < 4; ++corner) {
    const int64_t cy = y0 + (corner >> 1), cx = x0 + (corner & 1);
    const float inside = (cy >= 0 && cy < g.h && cx >= 0 && cx < g.w) ? 1.f : 0.f;
    const int64_t yc = cy < 0 ? 0 : (cy >= g.h ? g.h - 1 : cy), xc = cx < 0 ? 0 : (cx >= g.w ? g.w - 1 : cx);
    const float wy = (corner >> 1) ? a : 1.f - a, wx = (corner & 1) ? b : 1.f - b;
    c.index[corner] = (yc * g.w + xc) * g.c;
    c.w[corner] = wy * wx * inside;
    c.dwdy[corner] = ((corner >> 1) ? wx : -wx) * inside;
    c.dwdx[corner] = ((corner & 1) ? wy : -wy) * inside;
  }
  return c;
}

VCAR_KERNEL zero(float* p, int64_t n) {
  VCAR_FOR(i, n) p[i] = 0.f;
}

// cols[pl, c * taps + t] = mask * sample, for the tile's pixels p0 + pl, pl < n.
VCAR_KERNEL columns(Geometry g, const float* x, const float* offset, const float* mask, int64_t p0, int64_t n,
                    float* cols) {
  const int64_t J = g.dg * g.taps;
  VCAR_FOR(i, n * J * g.cd) {
    const int64_t pl = i / (J * g.cd), j = (i / g.cd) % J, c = (j / g.taps) * g.cd + i % g.cd, t = j % g.taps;
    const int64_t p = p0 + pl, hw = p % (g.h * g.w);
    const Corners s = corners(g, offset + p * 2 * J + 2 * j, hw / g.w, hw % g.w, t);
    const float* image = x + (p - hw) * g.c + c;
    float v = 0.f;
    for (int corner = 0; corner < 4; ++corner) v += s.w[corner] * image[s.index[corner]];
    cols[pl * g.col_width + c * g.taps + t] = mask[p * J + j] * v;
  }
}

// out[p, o] = bias[o] + sum over o's group of cols * kernel (kernel rows t * cg + c), for
// kOutputPixels pixels per thread: each kernel value read feeds that many products.
constexpr int64_t kOutputPixels = 8;

VCAR_KERNEL output(Geometry g, const float* cols, const float* kernel, const float* bias, int64_t p0, int64_t n,
                   float* out) {
  VCAR_FOR(i, (n + kOutputPixels - 1) / kOutputPixels * g.o) {
    const int64_t q = i / g.o * kOutputPixels, o = i % g.o, m = n - q < kOutputPixels ? n - q : kOutputPixels;
    const float* row = cols + q * g.col_width + (o / g.og) * g.cg * g.taps;
    float acc[kOutputPixels] = {};
    for (int64_t ci = 0; ci < g.cg; ++ci)
      for (int64_t t = 0; t < g.taps; ++t) {
        const float w = kernel[(t * g.cg + ci) * g.o + o];
        for (int64_t a = 0; a < kOutputPixels; ++a)  // pixels past the tile's last repeat it
          acc[a] += row[(a < m ? a : m - 1) * g.col_width + ci * g.taps + t] * w;
      }
    for (int64_t a = 0; a < m; ++a) out[(p0 + q + a) * g.o + o] = bias[o] + acc[a];
  }
}

// kernel_t[o, r] = kernel[r, o] (r = t * cg + ci): neighbouring threads of sample_grads read
// neighbouring floats of it, where kernel's rows would be O floats apart.
VCAR_KERNEL transpose(Geometry g, const float* kernel, float* kernel_t) {
  const int64_t rows = g.taps * g.cg;
  VCAR_FOR(i, rows * g.o) kernel_t[i] = kernel[(i % rows) * g.o + i / rows];
}

// Per (pixel, deformable group, tap): the column gradients of its channels, and from them the
// input (atomic adds at the corners), offset and mask gradients.
VCAR_KERNEL sample_grads(Geometry g, const float* x, const float* offset, const float* mask, const float* kernel_t,
                         const float* grad, int64_t p0, int64_t n, float* dx, float* doffset, float* dmask) {
  const int64_t J = g.dg * g.taps, rows = g.taps * g.cg;
  VCAR_FOR(i, n * J) {
    const int64_t p = p0 + i / J, j = i % J, t = j % g.taps, hw = p % (g.h * g.w);
    const Corners s = corners(g, offset + p * 2 * J + 2 * j, hw / g.w, hw % g.w, t);
    const float m = mask[p * J + j];
    const float* dy = grad + p * g.o;
    float gm = 0.f, gy = 0.f, gx = 0.f;
    for (int64_t c = (j / g.taps) * g.cd; c < (j / g.taps + 1) * g.cd; ++c) {
      const int64_t o0 = (c / g.cg) * g.og;
      const float* w = kernel_t + t * g.cg + c % g.cg;
      float gcol = 0.f;
      for (int64_t o = o0; o < o0 + g.og; ++o) gcol += dy[o] * w[o * rows];
      const float* image = x + (p - hw) * g.c + c;
      float* dimage = dx + (p - hw) * g.c + c;
      float v = 0.f, vy = 0.f, vx = 0.f;
      for (int corner = 0; corner < 4; ++corner) {
        const float q = image[s.index[corner]];
        v += s.w[corner] * q;
        vy += s.dwdy[corner] * q;
        vx += s.dwdx[corner] * q;
        if (s.w[corner] != 0.f) add_to(dimage + s.index[corner], gcol * m * s.w[corner]);
      }
      gm += gcol * v;
      gy += gcol * vy;
      gx += gcol * vx;
    }
    dmask[p * J + j] = gm;
    doffset[p * 2 * J + 2 * j] = gy * m;
    doffset[p * 2 * J + 2 * j + 1] = gx * m;
  }
}

// partial[s, r, o]: sum over slice s of the tile of cols[., column of row r for o] * grad[., o];
// row r = ci * taps + t of the group's columns, r = taps * cg is the bias (a column of ones).
VCAR_KERNEL kernel_grad_slices(Geometry g, const float* cols, const float* grad, int64_t p0, int64_t n,
                               float* partial) {
  const int64_t rows = g.taps * g.cg + 1, slices = (n + kSlice - 1) / kSlice;
  VCAR_FOR(i, slices * rows * g.o) {
    const int64_t s = i / (rows * g.o), r = (i / g.o) % rows, o = i % g.o;
    const int64_t column = (o / g.og) * g.cg * g.taps + r;
    float acc = 0.f;
    for (int64_t pl = s * kSlice; pl < std::min(n, (s + 1) * kSlice); ++pl)
      acc += (r + 1 == rows ? 1.f : cols[pl * g.col_width + column]) * grad[(p0 + pl) * g.o + o];
    partial[i] = acc;
  }
}

// dkernel (rows t * cg + ci) and dbias += the tile's slices.
VCAR_KERNEL kernel_grad_sum(Geometry g, const float* partial, int64_t slices, float* dkernel, float* dbias) {
  const int64_t rows = g.taps * g.cg + 1;
  VCAR_FOR(i, rows * g.o) {
    const int64_t r = i / g.o, o = i % g.o;
    float acc = 0.f;
    for (int64_t s = 0; s < slices; ++s) acc += partial[s * rows * g.o + i];
    if (r + 1 == rows)
      dbias[o] += acc;
    else
      dkernel[((r % g.taps) * g.cg + r / g.taps) * g.o + o] += acc;
  }
}

const char* status() {
#if defined(__CUDACC__)
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? nullptr : cudaGetErrorString(e);
#else
  return nullptr;
#endif
}

}  // namespace

const char* forward(const Geometry& g, const float* x, const float* offset, const float* mask, const float* kernel,
                    const float* bias, float* out, float* cols, void* stream) {
  const int64_t tile = tile_pixels(g), J = g.dg * g.taps;
  for (int64_t p0 = 0; p0 < g.pixels; p0 += tile) {
    const int64_t n = std::min(tile, g.pixels - p0);
    VCAR_LAUNCH(columns, n * J * g.cd, stream, g, x, offset, mask, p0, n, cols);
    VCAR_LAUNCH(output, (n + kOutputPixels - 1) / kOutputPixels * g.o, stream, g, cols, kernel, bias, p0, n, out);
  }
  return status();
}

const char* backward(const Geometry& g, const float* x, const float* offset, const float* mask, const float* kernel,
                     const float* grad, float* dx, float* doffset, float* dmask, float* dkernel, float* dbias,
                     float* cols, float* partial, void* stream) {
  const int64_t tile = tile_pixels(g), J = g.dg * g.taps, rows = g.taps * g.cg + 1;
  float* kernel_t = partial + slices_per_tile(g) * rows * g.o;
  VCAR_LAUNCH(transpose, (rows - 1) * g.o, stream, g, kernel, kernel_t);
  VCAR_LAUNCH(zero, g.pixels * g.c, stream, dx, g.pixels * g.c);
  VCAR_LAUNCH(zero, g.taps * g.cg * g.o, stream, dkernel, g.taps * g.cg * g.o);
  VCAR_LAUNCH(zero, g.o, stream, dbias, g.o);
  for (int64_t p0 = 0; p0 < g.pixels; p0 += tile) {
    const int64_t n = std::min(tile, g.pixels - p0), slices = (n + kSlice - 1) / kSlice;
    VCAR_LAUNCH(columns, n * J * g.cd, stream, g, x, offset, mask, p0, n, cols);
    VCAR_LAUNCH(sample_grads, n * J, stream, g, x, offset, mask, kernel_t, grad, p0, n, dx, doffset, dmask);
    VCAR_LAUNCH(kernel_grad_slices, slices * rows * g.o, stream, g, cols, grad, p0, n, partial);
    VCAR_LAUNCH(kernel_grad_sum, rows * g.o, stream, g, partial, slices, dkernel, dbias);
  }
  return status();
}

}  // namespace gpu
}  // namespace vcar
