// Tests for NVML loading where there is no GPU: every failure is a reason, never a crash or an exception.
#include "memguard/nvml.h"

#include <doctest/doctest.h>

#include <cstdio>

namespace ab {

TEST_CASE("NVML: a missing library is reported as unavailable with the reason") {
  std::string reason;
  auto nvml = Nvml::open(&reason, "libnvidia-ml-does-not-exist.so.1");
  CHECK_FALSE(nvml);
  CHECK(reason.find("libnvidia-ml-does-not-exist.so.1 could not be loaded") == 0);

  auto probe = probe_nvml("libnvidia-ml-does-not-exist.so.1");
  CHECK_FALSE(probe.available);
  CHECK(probe.devices.empty());
  CHECK_FALSE(probe.reason.empty());
}

TEST_CASE("NVML: a library that is not NVML is refused") {
  std::string reason;
  auto nvml = Nvml::open(&reason, "libm.so.6");  // loads fine, but has no nvmlInit
  CHECK_FALSE(nvml);
  CHECK(reason == "libm.so.6 lacks the NVML entry points (nvmlInit, nvmlDeviceGetCount, ...): not NVML");
}

TEST_CASE("NVML: the real library, where this machine has one") {
  auto probe = probe_nvml();
  if (!probe.available) {
    std::printf("NVML unavailable here (expected without a GPU): %s\n", probe.reason.c_str());
    CHECK_FALSE(probe.reason.empty());
    return;
  }
  REQUIRE_FALSE(probe.devices.empty());
  for (const auto& d : probe.devices) {
    CHECK(d.total_bytes > 0);
    CHECK(d.used_bytes <= d.total_bytes);
  }
}

}  // namespace ab
