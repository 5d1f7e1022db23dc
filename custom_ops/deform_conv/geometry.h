// Shapes of one deformable convolution: plain C++, shared by the CPU kernel and the CUDA one.
#pragma once

#include <cstdint>

namespace vcar {

struct Geometry {
  int64_t b, h, w, c, k, taps, dg, cd, groups, cg, o, og, pad, pixels, col_width;
  float tap_y[49], tap_x[49];  // kernel tap offsets from the centre (k <= 7)
};

}  // namespace vcar
