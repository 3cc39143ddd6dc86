// Parse-only stand-in for gloo/transport/device.h (see csrc/gloo_decls/README.md):
// held only through shared_ptr (Device) and unique_ptr (UnboundBuffer).
#pragma once

namespace gloo::transport {
class Device;
class UnboundBuffer {
 public:
  virtual ~UnboundBuffer() = default;
};
}  // namespace gloo::transport
