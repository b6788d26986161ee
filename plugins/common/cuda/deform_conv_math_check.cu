// Compile check: the shared per-element math must build as device code.
// Not linked into anything yet; the CUDA kernel comes with the TensorRT plugin.
#include "deform_conv_math.h"

namespace dcn_deploy {

// One thread per output of a single-tap, single-channel deformable sample:
// exercises every function of deform_conv_math.h on the device.
__global__ void deform_conv_math_check_kernel(const float* plane, int32_t height, int32_t width,
                                              const float* offsets, int32_t out_width, int32_t count,
                                              float* samples) {
  const int32_t index = blockIdx.x * blockDim.x + threadIdx.x;
  if (index >= count) return;
  const int32_t oy = index / out_width;
  const int32_t ox = index % out_width;
  const float y = sampling_coordinate(oy, 1, 0, 0, 1, offsets[2 * index]);
  const float x = sampling_coordinate(ox, 1, 0, 0, 1, offsets[2 * index + 1]);
  const BilinearCorners corners = sample_corners(y, x, height, width);
  samples[index] = interpolate(plane, corners) + bilinear_sample(plane, height, width, y, x);
}

}  // namespace dcn_deploy
