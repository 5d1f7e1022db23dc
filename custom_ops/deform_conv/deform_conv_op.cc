// Fused modulated deformable convolution (DCNv2), stride 1, 'same' padding, NHWC float32.
//
// Layout as vcar_tf/ops/deform_conv.py: offset (B, H, W, 2*D*k*k) with dy, dx per tap and
// deformable group, mask (B, H, W, D*k*k), kernel (k, k, C/groups, O). Bilinear sampling, zero
// outside the image (a corner contributes only when it lies inside).
//
// The work is split into tiles of pixels; a tile builds its own im2col block (never the whole
// image's), multiplies it with Eigen, and tiles run on TF's CPU thread pool.

#include <algorithm>
#include <cmath>
#include <vector>

#include "Eigen/Core"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/lib/core/threadpool.h"

namespace vcar {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::errors::InvalidArgument;
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
using Map = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;

constexpr int64_t kTile = 256;  // pixels per im2col block

struct Geometry {
  int64_t b, h, w, c, k, taps, dg, cd, groups, cg, o, og, pad, pixels, col_width;
  float tap_y[49], tap_x[49];  // kernel tap offsets from the centre (k <= 7)
};

struct Sample {  // bilinear sample of one tap: corners outside the image have weight 0, index 0
  int32_t index[4];
  float weight[4];
};

// The sample of the tap at (py, px); with derivatives, also d(weight)/dy and d(weight)/dx.
inline void sample_at(const Geometry& g, float py, float px, Sample* s, float* dwdy = nullptr,
                      float* dwdx = nullptr) {
  const float fy = std::floor(py), fx = std::floor(px);
  const float ly = py - fy, lx = px - fx;
  const int32_t y0 = static_cast<int32_t>(fy), x0 = static_cast<int32_t>(fx);
  const bool y0_in = y0 >= 0 && y0 < g.h, y1_in = y0 + 1 >= 0 && y0 + 1 < g.h;
  const bool x0_in = x0 >= 0 && x0 < g.w, x1_in = x0 + 1 >= 0 && x0 + 1 < g.w;
  const bool in[4] = {y0_in && x0_in, y0_in && x1_in, y1_in && x0_in, y1_in && x1_in};
  const float wy[2] = {1.f - ly, ly}, wx[2] = {1.f - lx, lx};
  const int32_t base = y0 * static_cast<int32_t>(g.w) + x0;
  const int32_t step[4] = {0, 1, static_cast<int32_t>(g.w), static_cast<int32_t>(g.w) + 1};
  for (int corner = 0; corner < 4; ++corner) {
    const int dy = corner >> 1, dx = corner & 1;
    s->index[corner] = in[corner] ? base + step[corner] : 0;
    s->weight[corner] = in[corner] ? wy[dy] * wx[dx] : 0.f;
    if (dwdy) {
      dwdy[corner] = in[corner] ? (dy ? 1.f : -1.f) * wx[dx] : 0.f;
      dwdx[corner] = in[corner] ? wy[dy] * (dx ? 1.f : -1.f) : 0.f;
    }
  }
}

// Position of tap t of deformable group d at pixel (y, x) with offsets `off` of that pixel.
inline void tap_position(const Geometry& g, const float* off, int64_t y, int64_t x, int64_t d, int64_t t, float* py,
                         float* px) {
  const float* o = off + d * 2 * g.taps + 2 * t;
  *py = static_cast<float>(y) + g.tap_y[t] + o[0];
  *px = static_cast<float>(x) + g.tap_x[t] + o[1];
}

// Column of channel c at tap 0 in the (group, tap, channel-in-group) layout; tap t adds t * cg.
std::vector<int64_t> column_offsets(const Geometry& g) {
  std::vector<int64_t> col(g.c);
  for (int64_t c = 0; c < g.c; ++c) col[c] = (c / g.cg) * g.taps * g.cg + (c % g.cg);
  return col;
}

// im2col of pixels [p0, p0 + n): cols (n, col_width), masked samples.
void build_columns(const Geometry& g, const float* x, const float* offset, const float* mask, const int64_t* col,
                   int64_t p0, int64_t n, float* cols) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p = p0 + i, hw = p % (g.h * g.w), y = hw / g.w, xx = hw % g.w;
    const float* image = x + (p - hw) * g.c;
    const float* off = offset + p * 2 * g.dg * g.taps;
    const float* m = mask + p * g.dg * g.taps;
    float* row = cols + i * g.col_width;
    for (int64_t d = 0; d < g.dg; ++d) {
      for (int64_t t = 0; t < g.taps; ++t) {
        float py, px;
        tap_position(g, off, y, xx, d, t, &py, &px);
        Sample s;
        sample_at(g, py, px, &s);
        const float mt = m[d * g.taps + t];
        const float* c0 = image + static_cast<int64_t>(s.index[0]) * g.c;
        const float* c1 = image + static_cast<int64_t>(s.index[1]) * g.c;
        const float* c2 = image + static_cast<int64_t>(s.index[2]) * g.c;
        const float* c3 = image + static_cast<int64_t>(s.index[3]) * g.c;
        for (int64_t c = d * g.cd; c < (d + 1) * g.cd; ++c)
          row[col[c] + t * g.cg] =
              mt * (s.weight[0] * c0[c] + s.weight[1] * c1[c] + s.weight[2] * c2[c] + s.weight[3] * c3[c]);
      }
    }
  }
}

#define VCAR_CHECK(cond, msg) \
  if (!(cond)) return InvalidArgument(msg)

absl::Status geometry(const Tensor& x, const Tensor& offset, const Tensor& mask, const Tensor& kernel, int dg,
                      int groups, Geometry* g) {
  VCAR_CHECK(x.dims() == 4 && offset.dims() == 4 && mask.dims() == 4 && kernel.dims() == 4,
             "x, offset, mask and kernel must be 4-D");
  g->b = x.dim_size(0);
  g->h = x.dim_size(1);
  g->w = x.dim_size(2);
  g->c = x.dim_size(3);
  g->k = kernel.dim_size(0);
  g->taps = g->k * g->k;
  g->dg = dg;
  g->groups = groups;
  g->o = kernel.dim_size(3);
  VCAR_CHECK(g->k % 2 == 1 && kernel.dim_size(1) == g->k, "kernel must be k x k with odd k");
  VCAR_CHECK(dg > 0 && groups > 0 && g->c % dg == 0 && g->c % groups == 0 && g->o % groups == 0,
             "channels must be divisible by deformable_groups and groups");
  VCAR_CHECK(kernel.dim_size(2) * groups == g->c, "kernel input channels != C / groups");
  for (const Tensor* t : {&offset, &mask})
    VCAR_CHECK(t->dim_size(0) == g->b && t->dim_size(1) == g->h && t->dim_size(2) == g->w,
               "offset and mask must have the input's B, H and W");
  VCAR_CHECK(offset.dim_size(3) == 2 * dg * g->taps, "offset must have 2 * deformable_groups * k * k channels");
  VCAR_CHECK(mask.dim_size(3) == dg * g->taps, "mask must have deformable_groups * k * k channels");
  g->cd = g->c / dg;
  g->cg = g->c / groups;
  g->og = g->o / groups;
  g->pad = (g->k - 1) / 2;
  g->pixels = g->b * g->h * g->w;
  g->col_width = g->taps * g->c;
  VCAR_CHECK(g->k <= 7, "kernel size above 7 is not supported");
  for (int64_t t = 0; t < g->taps; ++t) {
    g->tap_y[t] = static_cast<float>(t / g->k - g->pad);
    g->tap_x[t] = static_cast<float>(t % g->k - g->pad);
  }
  return absl::OkStatus();
}

class DeformConv2DOp : public OpKernel {
 public:
  explicit DeformConv2DOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("deformable_groups", &dg_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("groups", &groups_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor &x = ctx->input(0), &offset = ctx->input(1), &mask = ctx->input(2), &kernel = ctx->input(3),
                 &bias = ctx->input(4);
    Geometry g;
    OP_REQUIRES_OK(ctx, geometry(x, offset, mask, kernel, dg_, groups_, &g));
    OP_REQUIRES(ctx, bias.NumElements() == g.o, InvalidArgument("bias must have O elements"));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({g.b, g.h, g.w, g.o}), &out));
    const float *px = x.flat<float>().data(), *poff = offset.flat<float>().data(), *pm = mask.flat<float>().data(),
                *pk = kernel.flat<float>().data(), *pb = bias.flat<float>().data();
    float* py = out->flat<float>().data();
    const std::vector<int64_t> col = column_offsets(g);
    const int64_t tiles = (g.pixels + kTile - 1) / kTile;
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    pool->ParallelFor(tiles, kTile * g.col_width * g.o, [&](int64_t first, int64_t last) {
      std::vector<float> cols(kTile * g.col_width);
      for (int64_t tile = first; tile < last; ++tile) {
        const int64_t p0 = tile * kTile, n = std::min(kTile, g.pixels - p0);
        build_columns(g, px, poff, pm, col.data(), p0, n, cols.data());
        Map y(py + p0 * g.o, n, g.o, Eigen::OuterStride<>(g.o));
        ConstMap c(cols.data(), n, g.col_width, Eigen::OuterStride<>(g.col_width));
        ConstMap wk(pk, g.taps * g.cg, g.o, Eigen::OuterStride<>(g.o));
        for (int64_t grp = 0; grp < g.groups; ++grp)
          y.block(0, grp * g.og, n, g.og).noalias() =
              c.block(0, grp * g.taps * g.cg, n, g.taps * g.cg) * wk.block(0, grp * g.og, g.taps * g.cg, g.og);
        y.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(pb, g.o);
      }
    });
  }

 private:
  int dg_, groups_;
};

class DeformConv2DGradOp : public OpKernel {
 public:
  explicit DeformConv2DGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("deformable_groups", &dg_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("groups", &groups_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor &x = ctx->input(0), &offset = ctx->input(1), &mask = ctx->input(2), &kernel = ctx->input(3),
                 &grad = ctx->input(4);
    Geometry g;
    OP_REQUIRES_OK(ctx, geometry(x, offset, mask, kernel, dg_, groups_, &g));
    OP_REQUIRES(ctx, grad.dims() == 4 && grad.dim_size(0) == g.b && grad.dim_size(1) == g.h &&
                         grad.dim_size(2) == g.w && grad.dim_size(3) == g.o,
                InvalidArgument("grad must be (B, H, W, O)"));
    Tensor *dx, *doff, *dmask, *dkernel, *dbias;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, offset.shape(), &doff));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, mask.shape(), &dmask));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, kernel.shape(), &dkernel));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({g.o}), &dbias));
    const float *px = x.flat<float>().data(), *poff = offset.flat<float>().data(), *pm = mask.flat<float>().data(),
                *pk = kernel.flat<float>().data(), *pg = grad.flat<float>().data();
    const std::vector<int64_t> col = column_offsets(g);
    const int64_t tiles = (g.pixels + kTile - 1) / kTile;
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    // One chunk per thread; each chunk keeps its own input/kernel/bias gradient (samples of any
    // pixel may land anywhere in the image), summed at the end. Offset and mask gradients belong
    // to one pixel each, so chunks write them directly.
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(pool->NumThreads(), tiles));
    const int64_t x_size = x.NumElements(), k_size = kernel.NumElements();
    std::vector<std::vector<float>> dx_part(chunks), dk_part(chunks), db_part(chunks);
    pool->ParallelFor(chunks, 1LL << 40, [&](int64_t first, int64_t last) {
      for (int64_t chunk = first; chunk < last; ++chunk) {
        std::vector<float>& dxc = dx_part[chunk];
        std::vector<float>& dkc = dk_part[chunk];
        std::vector<float>& dbc = db_part[chunk];
        dxc.assign(x_size, 0.f);
        dkc.assign(k_size, 0.f);
        dbc.assign(g.o, 0.f);
        std::vector<float> cols(kTile * g.col_width), dcols(kTile * g.col_width);
        Map dk(dkc.data(), g.taps * g.cg, g.o, Eigen::OuterStride<>(g.o));
        ConstMap wk(pk, g.taps * g.cg, g.o, Eigen::OuterStride<>(g.o));
        for (int64_t tile = chunk * tiles / chunks; tile < (chunk + 1) * tiles / chunks; ++tile) {
          const int64_t p0 = tile * kTile, n = std::min(kTile, g.pixels - p0);
          ConstMap c(cols.data(), n, g.col_width, Eigen::OuterStride<>(g.col_width));
          ConstMap dy(pg + p0 * g.o, n, g.o, Eigen::OuterStride<>(g.o));
          Map dc(dcols.data(), n, g.col_width, Eigen::OuterStride<>(g.col_width));
          for (int64_t grp = 0; grp < g.groups; ++grp) {
            const int64_t c0 = grp * g.taps * g.cg, width = g.taps * g.cg, o0 = grp * g.og;
            dc.block(0, c0, n, width).noalias() = dy.block(0, o0, n, g.og) * wk.block(0, o0, width, g.og).transpose();
          }
          // one sampling pass: the columns (for the kernel gradient) and every sampled gradient
          scatter(g, px, poff, pm, col.data(), p0, n, dcols.data(), cols.data(), dxc.data(),
                  doff->flat<float>().data(), dmask->flat<float>().data());
          for (int64_t grp = 0; grp < g.groups; ++grp) {
            const int64_t c0 = grp * g.taps * g.cg, width = g.taps * g.cg, o0 = grp * g.og;
            dk.block(0, o0, width, g.og).noalias() += c.block(0, c0, n, width).transpose() * dy.block(0, o0, n, g.og);
          }
          Eigen::Map<Eigen::RowVectorXf>(dbc.data(), g.o) += dy.colwise().sum();
        }
      }
    });
    float *pdx = dx->flat<float>().data(), *pdk = dkernel->flat<float>().data(), *pdb = dbias->flat<float>().data();
    std::fill(pdx, pdx + x_size, 0.f);
    std::fill(pdk, pdk + k_size, 0.f);
    std::fill(pdb, pdb + g.o, 0.f);
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      for (int64_t i = 0; i < x_size; ++i) pdx[i] += dx_part[chunk][i];
      for (int64_t i = 0; i < k_size; ++i) pdk[i] += dk_part[chunk][i];
      for (int64_t i = 0; i < g.o; ++i) pdb[i] += db_part[chunk][i];
    }
  }

 private:
  // Column gradients of pixels [p0, p0 + n) -> input, offset and mask gradients; also writes the
  // tile's im2col columns (as build_columns does) from the same samples.
  static void scatter(const Geometry& g, const float* x, const float* offset, const float* mask, const int64_t* col,
                      int64_t p0, int64_t n, const float* dcols, float* cols, float* dx, float* doff, float* dmask) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = p0 + i, hw = p % (g.h * g.w), y = hw / g.w, xx = hw % g.w;
      const float* image = x + (p - hw) * g.c;
      float* dimage = dx + (p - hw) * g.c;
      const float* off = offset + p * 2 * g.dg * g.taps;
      const float* drow = dcols + i * g.col_width;
      float* row = cols + i * g.col_width;
      for (int64_t d = 0; d < g.dg; ++d) {
        for (int64_t t = 0; t < g.taps; ++t) {
          float py, px, dwdy[4], dwdx[4];
          tap_position(g, off, y, xx, d, t, &py, &px);
          Sample s;
          sample_at(g, py, px, &s, dwdy, dwdx);
          const int64_t mi = p * g.dg * g.taps + d * g.taps + t;
          const float m = mask[mi];
          float gm_sum = 0.f, gy = 0.f, gx = 0.f;
          for (int64_t c = d * g.cd; c < (d + 1) * g.cd; ++c) {
            const int64_t column = col[c] + t * g.cg;
            const float gcol = drow[column];
            float v = 0.f, vy = 0.f, vx = 0.f;
            for (int corner = 0; corner < 4; ++corner) {
              const int64_t at = static_cast<int64_t>(s.index[corner]) * g.c + c;
              const float pixel = image[at];
              v += s.weight[corner] * pixel;
              vy += dwdy[corner] * pixel;
              vx += dwdx[corner] * pixel;
              dimage[at] += gcol * m * s.weight[corner];
            }
            row[column] = m * v;
            gm_sum += gcol * v;
            gy += gcol * vy;
            gx += gcol * vx;
          }
          dmask[mi] = gm_sum;
          float* dof = doff + p * 2 * g.dg * g.taps + d * 2 * g.taps + 2 * t;
          dof[0] = gy * m;
          dof[1] = gx * m;
        }
      }
    }
  }

  int dg_, groups_;
};

}  // namespace vcar

REGISTER_OP("VcarDeformConv2D")
    .Input("x: float")
    .Input("offset: float")
    .Input("mask: float")
    .Input("kernel: float")
    .Input("bias: float")
    .Output("y: float")
    .Attr("deformable_groups: int = 1")
    .Attr("groups: int = 1")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle x, kernel, out;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 4, &kernel));
      TF_RETURN_IF_ERROR(c->ReplaceDim(x, 3, c->Dim(kernel, 3), &out));
      c->set_output(0, out);
      return absl::OkStatus();
    });

REGISTER_OP("VcarDeformConv2DGrad")
    .Input("x: float")
    .Input("offset: float")
    .Input("mask: float")
    .Input("kernel: float")
    .Input("grad: float")
    .Output("dx: float")
    .Output("doffset: float")
    .Output("dmask: float")
    .Output("dkernel: float")
    .Output("dbias: float")
    .Attr("deformable_groups: int = 1")
    .Attr("groups: int = 1")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      for (int i = 0; i < 4; ++i) c->set_output(i, c->input(i));
      tensorflow::shape_inference::ShapeHandle kernel;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 4, &kernel));
      c->set_output(4, c->Vector(c->Dim(kernel, 3)));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("VcarDeformConv2D").Device(tensorflow::DEVICE_CPU), vcar::DeformConv2DOp);
REGISTER_KERNEL_BUILDER(Name("VcarDeformConv2DGrad").Device(tensorflow::DEVICE_CPU), vcar::DeformConv2DGradOp);
