// Parse-only stand-in for gloo/algorithm.h (see csrc/gloo_decls/README.md).
#pragma once
