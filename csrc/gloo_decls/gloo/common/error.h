// Parse-only stand-in for gloo/common/error.h (see csrc/gloo_decls/README.md).
#pragma once
