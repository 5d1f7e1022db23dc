// work(first, last) over the units [0, units), split over TF's intra-op threads by their cost.
#pragma once

#include <cstdint>
#include <functional>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/util/work_sharder.h"

namespace vcar {

inline void parallel_for(tensorflow::OpKernelContext* ctx, int64_t units, int64_t cost_per_unit,
                         const std::function<void(int64_t, int64_t)>& work) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(workers->num_threads, workers->workers, units, cost_per_unit, work);
}

}  // namespace vcar
