// The NCCL half of the c10d shim (issue #28): a factory for c10d's
// ProcessGroupNCCL (CUDA tensors), in a shared object of its own that
// src/dist opens at run time, after src/device.rs has loaded libtorch_cuda.
// The collectives are csrc/c10d.cpp's, which take any c10d Backend: this
// file only makes the group.
//
// Built by build.rs only where the CUDA header wheels are installed
// (scripts/setup.sh: nvidia-cuda-crt and nvidia-cuda-cccl beside the torch
// wheel's nvidia-cuda-runtime and nvidia-nccl), with -DUSE_C10D_NCCL
// -DUSE_CUDA, linked to torch_cuda and c10_cuda: a CPU machine builds it
// too, and opening it there gives c10d's "no GPUs found" error when a group
// is made. Same conventions as csrc/c10d.cpp (0 or -1 and a message).
#include "c10d_common.hpp"

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <c10/cuda/CUDAFunctions.h>

extern "C" {

// Joins an NCCL process group through the TCPStore at host:port (hosted by
// this rank when `is_store_server`), under `prefix`, bound to CUDA device
// `device_index`. On success `*group` owns it (csrc/c10d.cpp's
// tchlab_c10d_destroy shuts it down and frees it).
int tchlab_c10d_nccl_new(const char* store_host, uint16_t port, int rank, int world_size, bool is_store_server,
                         int64_t timeout_ms, const char* prefix, int device_index, void** group, char* error,
                         size_t capacity) {
  return tchlab_c10d::guarded(error, capacity, [&] {
    tchlab_c10d::quiet_c10d_logs();
    // As torch.cuda.set_device(LOCAL_RANK): this rank's work defaults to its own GPU.
    // Without a GPU, ProcessGroupNCCL's constructor says so in c10d's own words.
    if (c10::cuda::device_count() > device_index) {
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(device_index));
    }
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto store = tchlab_c10d::connect_store(store_host, port, world_size, is_store_server, timeout, prefix);
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    auto backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world_size, options);
    backend->setBoundDeviceId(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_index)));
    *group = new tchlab_c10d::Group{store, backend, timeout, true};
  });
}
}
