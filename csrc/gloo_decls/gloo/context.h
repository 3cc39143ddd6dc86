// Parse-only stand-in for gloo/context.h (see csrc/gloo_decls/README.md):
// ProcessGroupGloo::setTimeout's inline body calls Context::setTimeout.
#pragma once
#include <chrono>

namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
}  // namespace gloo
