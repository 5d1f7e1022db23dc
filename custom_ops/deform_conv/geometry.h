// Shapes of one deformable convolution: plain C++, shared by the CPU kernel and the CUDA one.
#pragma once

#include <cstdint>

namespace vcar {

struct Geometry {
  int64_t b, h, w, c, k, taps, dg, cd, groups, cg, o, og, pad, pixels, col_width;
  float tap_y[49], tap_x[49];  // kernel tap offsets from the centre (k <= 7)
};

// Fills g for a B x H x W x C input, a k x k kernel to O channels, dg deformable groups and
// `groups` convolution groups: nullptr, or what is wrong with those sizes.
inline const char* make_geometry(int64_t b, int64_t h, int64_t w, int64_t c, int64_t k, int64_t o, int64_t dg,
                                 int64_t groups, Geometry* g) {
  if (k % 2 != 1) return "kernel must be k x k with odd k";
  if (dg <= 0 || groups <= 0 || c % dg != 0 || c % groups != 0 || o % groups != 0)
    return "channels must be divisible by deformable_groups and groups";
  if (k > 7) return "kernel size above 7 is not supported";
  *g = Geometry{};
  g->b = b;
  g->h = h;
  g->w = w;
  g->c = c;
  g->k = k;
  g->taps = k * k;
  g->dg = dg;
  g->groups = groups;
  g->o = o;
  g->cd = c / dg;
  g->cg = c / groups;
  g->og = o / groups;
  g->pad = (k - 1) / 2;
  g->pixels = b * h * w;
  g->col_width = g->taps * c;
  for (int64_t t = 0; t < g->taps; ++t) {
    g->tap_y[t] = static_cast<float>(t / k - g->pad);
    g->tap_x[t] = static_cast<float>(t % k - g->pad);
  }
  return nullptr;
}

}  // namespace vcar
