// The C++ API entry points pyaotriton hands to _aotriton_torch through a
// capsule, so that the torch fast path runs on pyaotriton's copy of the
// runtime: one module cache, one image store, one module_load_count and one
// preload() per process, instead of a second static libaotriton inside the
// extension whose kernels preload() never warmed.
#pragma once

#include <cstdint>

#include "aotriton/flash.h"
#include "aotriton/moe.h"
#include "aotriton/runtime.h"

namespace pyaotriton {

inline constexpr const char* kRuntimeApiCapsule = "pyaotriton._runtime_api";

struct RuntimeApi {
  // Both modules are built together; the sizes guard against mixing files of two builds.
  uint32_t struct_size;
  uint32_t fwd_params_size;
  uint32_t act_and_mul_params_size;
  aotriton::Status (*attn_fwd)(const aotriton::flash::FwdParams&, aotriton::Stream,
                               const aotriton::KernelOptions*) noexcept;
  aotriton::Status (*act_and_mul)(const aotriton::moe::ActAndMulParams&, aotriton::Stream,
                                  const aotriton::KernelOptions*) noexcept;
  const char* (*error_string)(aotriton::Status) noexcept;
  aotriton::Status (*ensure_current_device)(int ordinal) noexcept;
};

inline constexpr RuntimeApi kRuntimeApiShape{sizeof(RuntimeApi), sizeof(aotriton::flash::FwdParams),
                                            sizeof(aotriton::moe::ActAndMulParams), nullptr, nullptr, nullptr,
                                            nullptr};

}  // namespace pyaotriton
