// The device side of a planned launch: the __global__ kernels and their
// launches on a stream.
#pragma once

#include <cuda_runtime.h>

#include "cuda/plan.h"

namespace dcn_deploy::cuda {

// Launches the planned kernel (and, channels-last, its two copy passes into
// `workspace`). Asynchronous; returns the launch status.
cudaError_t launch_on_device(const LaunchPlan& plan, const Problem& problem, const DcnDeformConvBuffers& buffers,
                             void* workspace, cudaStream_t stream);

}  // namespace dcn_deploy::cuda
