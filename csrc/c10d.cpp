// C entry points to PyTorch's own c10d for `src/dist` (issue #28): a Gloo
// process group (CPU tensors) over a TCPStore, and the collectives a
// data-parallel run needs, on any c10d Backend (also the NCCL groups that
// csrc/c10d_nccl.cpp makes). Every collective goes through c10d's Backend.
//
// Compiled by build.rs against the wheel's headers with -DUSE_C10D_GLOO and
// the parse-only gloo declarations in csrc/gloo_decls (the wheel ships no
// gloo headers; gloo's code is inside libtorch_cpu). See ../shared/FACTS.md.
//
// Conventions: every function returns 0 on success and -1 on failure, with
// a message copied (truncated, NUL-terminated) into the caller's buffer; no
// C++ exception crosses into Rust. Tensors are tch's `torch::Tensor*`
// (`Tensor::as_ptr`). Each collective waits on its Work with the group's
// timeout, so a dead or missing peer gives an error, not a hang.
//
// Not catchable here (they end the process inside gloo's threads): ranks that
// issue collectives in different orders, and a peer that loses the store
// host while still inside a collective. Callers keep the order identical on
// every rank and end with a barrier.
#include "c10d_common.hpp"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <vector>

namespace {

using tchlab_c10d::Group;
using tchlab_c10d::guarded;

std::vector<at::Tensor> tensor_list(const at::Tensor* const* tensors, size_t count) {
  std::vector<at::Tensor> list;
  list.reserve(count);
  for (size_t i = 0; i < count; ++i) list.push_back(*tensors[i]);
  return list;
}

void wait(const c10::intrusive_ptr<c10d::Work>& work, const Group& group) { work->wait(group.timeout); }

// Issues one collective per tensor (Gloo's tensor lists are per-device
// replicas of one tensor), then waits for them in order.
template <typename Issue>
void per_tensor(const Group& group, const at::Tensor* const* tensors, size_t count, Issue issue) {
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  works.reserve(count);
  for (auto& tensor : tensor_list(tensors, count)) {
    std::vector<at::Tensor> one{tensor};
    works.push_back(issue(one));
  }
  for (auto& work : works) wait(work, group);
}

c10::intrusive_ptr<c10d::ProcessGroupGloo::Options> gloo_options(const char* device_host,
                                                                  std::chrono::milliseconds timeout) {
  using Gloo = c10d::ProcessGroupGloo;
  if (device_host == nullptr) return Gloo::Options::create_default(timeout);
  auto options = Gloo::Options::create(timeout);
  options->devices.push_back(Gloo::createDeviceForHostname(std::string(device_host)));
  return options;
}

}  // namespace

extern "C" {

// Joins a Gloo process group: connects to (or, with `is_store_server`, hosts)
// the TCPStore at host:port, under `prefix`, and rendezvouses with the other
// ranks. `device_host` is the address Gloo binds to (NULL: Gloo's default
// device, which honours GLOO_SOCKET_IFNAME). On success `*group` owns it.
// From here on c10's log says only fatal errors (see quiet_c10d_logs).
int tchlab_c10d_gloo_new(const char* store_host, uint16_t port, int rank, int world_size, bool is_store_server,
                         int64_t timeout_ms, const char* prefix, const char* device_host, void** group, char* error,
                         size_t capacity) {
  return guarded(error, capacity, [&] {
    tchlab_c10d::quiet_c10d_logs();
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto store = tchlab_c10d::connect_store(store_host, port, world_size, is_store_server, timeout, prefix);
    auto options = gloo_options(device_host, timeout);
    auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, options);
    *group = new Group{store, backend, timeout};
  });
}

// Sums each tensor over the ranks, in place.
int tchlab_c10d_all_reduce_sum(void* group, const at::Tensor* const* tensors, size_t count, char* error,
                               size_t capacity) {
  return guarded(error, capacity, [&] {
    auto& g = *static_cast<Group*>(group);
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    options.timeout = g.timeout;
    per_tensor(g, tensors, count, [&](std::vector<at::Tensor>& one) { return g.backend->allreduce(one, options); });
  });
}

// Copies each tensor of rank `root` into the same tensor of every rank.
int tchlab_c10d_broadcast(void* group, const at::Tensor* const* tensors, size_t count, int root, char* error,
                          size_t capacity) {
  return guarded(error, capacity, [&] {
    auto& g = *static_cast<Group*>(group);
    c10d::BroadcastOptions options;
    options.rootRank = root;
    options.timeout = g.timeout;
    per_tensor(g, tensors, count, [&](std::vector<at::Tensor>& one) { return g.backend->broadcast(one, options); });
  });
}

// Fills outputs[r] (world_size tensors, each the size and dtype of `input`)
// with rank r's `input`.
int tchlab_c10d_all_gather(void* group, const at::Tensor* input, const at::Tensor* const* outputs, size_t count,
                           char* error, size_t capacity) {
  return guarded(error, capacity, [&] {
    auto& g = *static_cast<Group*>(group);
    std::vector<std::vector<at::Tensor>> output_lists{tensor_list(outputs, count)};
    std::vector<at::Tensor> inputs{*input};
    c10d::AllgatherOptions options;
    options.timeout = g.timeout;
    wait(g.backend->allgather(output_lists, inputs, options), g);
  });
}

// Returns when every rank has reached it.
int tchlab_c10d_barrier(void* group, char* error, size_t capacity) {
  return guarded(error, capacity, [&] {
    auto& g = *static_cast<Group*>(group);
    c10d::BarrierOptions options;
    options.timeout = g.timeout;
    wait(g.backend->barrier(options), g);
  });
}

// Leaves the group: waits for queued work (at most the timeout, inside gloo),
// closes the connections and the store.
void tchlab_c10d_destroy(void* group) {
  try {
    auto* g = static_cast<Group*>(group);
    if (g->shutdown) g->backend->shutdown();
    delete g;
  } catch (...) {
  }
}
}
