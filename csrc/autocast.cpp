// C entry points to libtorch's autocast switches for any device type and
// reduced-precision dtype (tch 0.24 exposes only CUDA's on/off switch).
//
// The four functions are declared here with the signatures of
// ATen/autocast_mode.h instead of including it: that header pulls in all of
// ATen (about 18 s of compilation against 1 s). A changed parameter list
// in a later libtorch fails at link time (the mangled name changes); a
// changed return type would not (C++ does not mangle it into the name), so
// check these four against ATen/autocast_mode.h when torch is upgraded.
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace at::autocast {
bool is_autocast_enabled(c10::DeviceType device_type);
void set_autocast_enabled(c10::DeviceType device_type, bool enabled);
c10::ScalarType get_autocast_dtype(c10::DeviceType device_type);
void set_autocast_dtype(c10::DeviceType device_type, c10::ScalarType dtype);
}  // namespace at::autocast

namespace {
c10::DeviceType device_type(bool cuda) { return cuda ? c10::DeviceType::CUDA : c10::DeviceType::CPU; }
c10::ScalarType dtype(bool bf16) { return bf16 ? c10::ScalarType::BFloat16 : c10::ScalarType::Half; }
}  // namespace

extern "C" {

bool tchlab_autocast_is_enabled(bool cuda) { return at::autocast::is_autocast_enabled(device_type(cuda)); }

void tchlab_autocast_set_enabled(bool cuda, bool enabled) {
  at::autocast::set_autocast_enabled(device_type(cuda), enabled);
}

// Whether the device type's autocast dtype is bf16 (otherwise fp16: only these two are set here).
bool tchlab_autocast_dtype_is_bf16(bool cuda) {
  return at::autocast::get_autocast_dtype(device_type(cuda)) == c10::ScalarType::BFloat16;
}

void tchlab_autocast_set_dtype(bool cuda, bool bf16) { at::autocast::set_autocast_dtype(device_type(cuda), dtype(bf16)); }
}
