// align-batch-worker: loads a model once, then answers one JSON job per stdin line (issue 4).
#include <torch/script.h>
#include <torch/version.h>

#include <cstdio>

int main() {
  std::printf("align-batch-worker %s (LibTorch %d.%d)\n", AB_VERSION, TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR);
  return 0;
}
