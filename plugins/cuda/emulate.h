// The CPU emulator of a planned launch: the same kernel code, one emulated
// thread block (and thread, or warp) at a time, with host pointers. Slow;
// lets the kernels' tiling and indexing be tested without a GPU.
#pragma once

#include "cuda/plan.h"

namespace dcn_deploy::cuda {

void emulate_on_host(const LaunchPlan& plan, const Problem& problem, const DcnDeformConvBuffers& buffers);

}  // namespace dcn_deploy::cuda
