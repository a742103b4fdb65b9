// GPU memory per device and per process through NVML, loaded at run time so no GPU is needed to build or run.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ab {

/// One GPU as NVML reports it.
struct GpuDevice {
  unsigned index = 0;
  std::string name;
  std::uint64_t total_bytes = 0;
  std::uint64_t used_bytes = 0;
};

/// GPU memory one process holds on one device (compute contexts: what LibTorch creates).
struct GpuProcess {
  pid_t pid = 0;
  unsigned device = 0;
  std::uint64_t used_bytes = 0;
};

/// A loaded and initialised NVML. Open with Nvml::open; missing library or GPU is a reason, not an error.
class Nvml {
 public:
  /// The library name the NVIDIA driver installs.
  static constexpr const char* kLibrary = "libnvidia-ml.so.1";

  /// dlopen()s `library` and calls nvmlInit. Returns null and sets *reason when NVML is unavailable
  /// ("libnvidia-ml.so.1 not found (no NVIDIA driver)", "nvmlInit failed: Driver Not Loaded").
  static std::unique_ptr<Nvml> open(std::string* reason, const char* library = kLibrary);
  ~Nvml();
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;

  /// All devices with their memory totals; a device NVML cannot read is left out.
  std::vector<GpuDevice> devices();
  /// Every compute process on every device.
  std::vector<GpuProcess> processes();

  struct Api;  // resolved entry points (nvml.cpp)

 private:
  Nvml(void* handle, std::unique_ptr<Api> api);
  void* handle_;
  std::unique_ptr<Api> api_;
};

/// What doctor prints: devices, or why there are none.
struct NvmlProbe {
  bool available = false;
  std::string reason;  ///< when !available
  std::vector<GpuDevice> devices;
};

/// Opens NVML, lists devices, closes it.
NvmlProbe probe_nvml(const char* library = Nvml::kLibrary);

}  // namespace ab
