// NVML through dlopen: the few entry points memguard needs, declared here so no CUDA headers are required.
#include "memguard/nvml.h"

#include <dlfcn.h>

#include <cstring>

namespace ab {
namespace {

// From nvml.h (stable C ABI since NVML 10): return codes are ints, handles are pointers.
using nvmlReturn_t = int;
using nvmlDevice_t = void*;
constexpr nvmlReturn_t kNvmlSuccess = 0;
constexpr nvmlReturn_t kNvmlErrorInsufficientSize = 7;
constexpr unsigned long long kNvmlValueNotAvailable = ~0ull;  // usedGpuMemory under some drivers/WDDM

struct NvmlMemory {
  unsigned long long total, free, used;
};
// nvmlProcessInfo_v1_t (the unversioned call) and nvmlProcessInfo_v2_t (the _v2 and _v3 calls).
struct NvmlProcessInfoV1 {
  unsigned int pid;
  unsigned long long usedGpuMemory;
};
struct NvmlProcessInfoV2 {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};

}  // namespace

struct Nvml::Api {
  nvmlReturn_t (*init)() = nullptr;
  nvmlReturn_t (*shutdown)() = nullptr;
  const char* (*error_string)(nvmlReturn_t) = nullptr;
  nvmlReturn_t (*device_count)(unsigned*) = nullptr;
  nvmlReturn_t (*device_by_index)(unsigned, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*device_name)(nvmlDevice_t, char*, unsigned) = nullptr;
  nvmlReturn_t (*device_memory)(nvmlDevice_t, NvmlMemory*) = nullptr;
  nvmlReturn_t (*processes_v2)(nvmlDevice_t, unsigned*, NvmlProcessInfoV2*) = nullptr;  // _v3 or _v2
  nvmlReturn_t (*processes_v1)(nvmlDevice_t, unsigned*, NvmlProcessInfoV1*) = nullptr;

  std::string describe(nvmlReturn_t r) const {
    const char* s = error_string ? error_string(r) : nullptr;
    return s ? s : "NVML error " + std::to_string(r);
  }
};

namespace {

template <typename F>
void resolve(void* handle, F* fn, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    if (void* p = ::dlsym(handle, n)) {
      *fn = reinterpret_cast<F>(p);
      return;
    }
  }
}

}  // namespace

Nvml::Nvml(void* handle, std::unique_ptr<Api> api) : handle_(handle), api_(std::move(api)) {}

Nvml::~Nvml() {
  api_->shutdown();
  ::dlclose(handle_);
}

std::unique_ptr<Nvml> Nvml::open(std::string* reason, const char* library) {
  void* handle = ::dlopen(library, RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* err = ::dlerror();
    *reason = std::string(library) + " could not be loaded (no NVIDIA driver installed?): " + (err ? err : "");
    return nullptr;
  }
  auto api = std::make_unique<Api>();
  resolve(handle, &api->init, {"nvmlInit_v2", "nvmlInit"});
  resolve(handle, &api->shutdown, {"nvmlShutdown"});
  resolve(handle, &api->error_string, {"nvmlErrorString"});
  resolve(handle, &api->device_count, {"nvmlDeviceGetCount_v2", "nvmlDeviceGetCount"});
  resolve(handle, &api->device_by_index, {"nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex"});
  resolve(handle, &api->device_name, {"nvmlDeviceGetName"});
  resolve(handle, &api->device_memory, {"nvmlDeviceGetMemoryInfo"});
  resolve(handle, &api->processes_v2,
          {"nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2"});
  if (!api->processes_v2) resolve(handle, &api->processes_v1, {"nvmlDeviceGetComputeRunningProcesses"});
  if (!api->init || !api->shutdown || !api->device_count || !api->device_by_index || !api->device_memory) {
    *reason = std::string(library) + " lacks the NVML entry points (nvmlInit, nvmlDeviceGetCount, ...): not NVML";
    ::dlclose(handle);
    return nullptr;
  }
  if (nvmlReturn_t r = api->init(); r != kNvmlSuccess) {
    *reason = "nvmlInit failed: " + api->describe(r);
    ::dlclose(handle);
    return nullptr;
  }
  return std::unique_ptr<Nvml>(new Nvml(handle, std::move(api)));
}

std::vector<GpuDevice> Nvml::devices() {
  std::vector<GpuDevice> out;
  unsigned count = 0;
  if (api_->device_count(&count) != kNvmlSuccess) return out;
  for (unsigned i = 0; i < count; ++i) {
    nvmlDevice_t dev = nullptr;
    NvmlMemory mem{};
    if (api_->device_by_index(i, &dev) != kNvmlSuccess || api_->device_memory(dev, &mem) != kNvmlSuccess) continue;
    GpuDevice d;
    d.index = i;
    d.total_bytes = mem.total;
    d.used_bytes = mem.used;
    char name[96] = {0};
    if (api_->device_name && api_->device_name(dev, name, sizeof name - 1) == kNvmlSuccess) d.name = name;
    out.push_back(std::move(d));
  }
  return out;
}

namespace {

// Calls a process-list entry point with a buffer that grows until it fits.
template <typename Info, typename Fn>
std::vector<Info> list_processes(Fn fn, nvmlDevice_t dev) {
  std::vector<Info> buf(32);
  for (int attempt = 0; attempt < 4; ++attempt) {
    unsigned n = static_cast<unsigned>(buf.size());
    nvmlReturn_t r = fn(dev, &n, buf.data());
    if (r == kNvmlSuccess) {
      buf.resize(n);
      return buf;
    }
    if (r != kNvmlErrorInsufficientSize) break;
    buf.resize(static_cast<std::size_t>(n) + 16);  // processes may start between the two calls
  }
  return {};
}

}  // namespace

std::vector<GpuProcess> Nvml::processes() {
  std::vector<GpuProcess> out;
  unsigned count = 0;
  if (api_->device_count(&count) != kNvmlSuccess) return out;
  auto add = [&](unsigned device, unsigned pid, unsigned long long used) {
    out.push_back({static_cast<pid_t>(pid), device, used == kNvmlValueNotAvailable ? 0 : used});
  };
  for (unsigned i = 0; i < count; ++i) {
    nvmlDevice_t dev = nullptr;
    if (api_->device_by_index(i, &dev) != kNvmlSuccess) continue;
    if (api_->processes_v2) {
      for (auto& p : list_processes<NvmlProcessInfoV2>(api_->processes_v2, dev)) add(i, p.pid, p.usedGpuMemory);
    } else if (api_->processes_v1) {
      for (auto& p : list_processes<NvmlProcessInfoV1>(api_->processes_v1, dev)) add(i, p.pid, p.usedGpuMemory);
    }
  }
  return out;
}

NvmlProbe probe_nvml(const char* library) {
  NvmlProbe probe;
  auto nvml = Nvml::open(&probe.reason, library);
  if (!nvml) return probe;
  probe.devices = nvml->devices();
  if (probe.devices.empty()) {
    probe.reason = "NVML loaded but reports no GPU";
    return probe;
  }
  probe.available = true;
  return probe;
}

}  // namespace ab
