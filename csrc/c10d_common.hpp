// What the two c10d shims share (csrc/c10d.cpp, linked into every binary, and
// csrc/c10d_nccl.cpp, a shared object opened at run time on GPU machines):
// the Group handle they hand to Rust, the error convention, the quiet log and
// the store every rank rendezvouses through. See csrc/c10d.cpp's header.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <c10/util/Logging.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>

namespace tchlab_c10d {

// A process group and what it needs alive: the store it rendezvoused through.
// `shutdown` backends (NCCL) are shut down before they are released, as
// torch.distributed.destroy_process_group does.
struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
  bool shutdown = false;
};

inline void copy_message(const char* message, char* buffer, size_t capacity) {
  if (buffer == nullptr || capacity == 0) return;
  size_t length = std::min(std::strlen(message), capacity - 1);
  std::memcpy(buffer, message, length);
  buffer[length] = '\0';
}

// Runs `body`, turning any C++ exception into -1 and its message.
template <typename Body>
int guarded(char* error, size_t capacity, Body body) {
  try {
    body();
    return 0;
  } catch (const c10::Error& e) {
    copy_message(e.what_without_backtrace(), error, capacity);
  } catch (const std::exception& e) {
    copy_message(e.what(), error, capacity);
  } catch (...) {
    copy_message("unknown C++ exception", error, capacity);
  }
  return -1;
}

// c10d logs each connection retry and timeout on stderr, with a backtrace;
// a run says its error in one line instead (the message returned here). As
// in PyTorch, TORCH_CPP_LOG_LEVEL (INFO, WARNING, ERROR) brings them back.
inline void quiet_c10d_logs() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (std::getenv("TORCH_CPP_LOG_LEVEL") != nullptr) {
      c10::initLogging();
    } else {
      FLAGS_caffe2_log_level = c10::GLOG_FATAL;
    }
  });
}

// Connects to (or, with `is_server`, hosts) the TCPStore at host:port, under `prefix`.
inline c10::intrusive_ptr<c10d::Store> connect_store(const char* host, uint16_t port, int world_size, bool is_server,
                                                     std::chrono::milliseconds timeout, const char* prefix) {
  c10d::TCPStoreOptions options;
  options.port = port;
  options.isServer = is_server;
  options.numWorkers = static_cast<size_t>(world_size);
  options.waitWorkers = true;
  options.timeout = timeout;
  auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), options);
  return c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
}

}  // namespace tchlab_c10d
