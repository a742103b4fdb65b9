// TorchEmissionModel: the worker's only LibTorch translation unit (besides the test-model tool).
#include "worker/torch_emission_model.h"

#include <malloc.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <unordered_map>

#include <ATen/Parallel.h>
#include <torch/script.h>
#include <torch/version.h>

#include "worker/shared_weights.h"
#include "worker/torch_block_allocator.h"
#include "worker/worker_loop.h"

namespace ab {

namespace {

/// True when a LibTorch error is an allocation failure (CPU: "DefaultCPUAllocator: can't allocate
/// memory", CUDA: "CUDA out of memory").
bool is_out_of_memory(const std::string& what) {
  return what.find("out of memory") != std::string::npos || what.find("can't allocate memory") != std::string::npos;
}

/// First line of a LibTorch message (they append long C++ stack traces).
std::string first_line(const std::string& what) {
  const auto nl = what.find('\n');
  return nl == std::string::npos ? what : what.substr(0, nl);
}

/// The line that says what went wrong: for an error raised inside the TorchScript interpreter
/// (a two-part traceback ending in "RuntimeError: ..."), its last non-empty line; else the first.
std::string summary(const std::string& what) {
  if (what.find("TorchScript interpreter") == std::string::npos) return first_line(what);
  auto end = what.find_last_not_of("\n \"");
  if (end == std::string::npos) return first_line(what);
  const auto start = what.rfind('\n', end);
  return what.substr(start == std::string::npos ? 0 : start + 1, end - (start == std::string::npos ? 0 : start + 1) + 1);
}

}  // namespace

void set_torch_threads(int threads) {
  at::set_num_threads(std::max(1, threads));
  at::set_num_interop_threads(1);
}

int torch_threads() { return at::get_num_threads(); }

struct TorchEmissionModel::Impl {
  // Declared first so it is unmapped last, after the module whose tensors point into it.
  std::unique_ptr<SharedWeights> shared;
  torch::jit::Module module;

  /// Moves every dense contiguous CPU parameter and buffer into the file at `path` (written by
  /// the first worker of the key), frees the private copies and returns the heap to the kernel.
  void share(const std::filesystem::path& path, WeightSharing& report);
};

void TorchEmissionModel::Impl::share(const std::filesystem::path& path, WeightSharing& report) {
  std::vector<torch::Tensor> tensors;
  std::vector<std::size_t> blob_of;  // tensors[i] lives in blobs[blob_of[i]]
  std::vector<WeightBlob> blobs;
  std::unordered_map<const void*, std::size_t> by_data;  // tied tensors share one blob
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    if (!t.defined() || !t.device().is_cpu() || t.layout() != torch::kStrided || t.is_quantized() ||
        !t.is_contiguous() || t.storage_offset() != 0 || t.nbytes() == 0)
      return;  // stays private: nothing to gain or not a plain block of memory
    const auto [it, fresh] = by_data.try_emplace(t.data_ptr(), blobs.size());
    if (fresh) {
      blobs.push_back({name, std::string(c10::toString(t.scalar_type())), t.sizes().vec(), t.data_ptr(), t.nbytes()});
    } else if (blobs[it->second].bytes != t.nbytes() || blobs[it->second].sizes != t.sizes().vec()) {
      return;  // a different view of the same storage: leave it private
    }
    tensors.push_back(t);
    blob_of.push_back(it->second);
  };
  for (const auto& p : module.named_parameters(/*recurse=*/true)) add(p.name, p.value);
  for (const auto& b : module.named_buffers(/*recurse=*/true)) add(b.name, b.value);
  auto mapped = SharedWeights::open(path, blobs);
  if (!mapped) {
    report.error = mapped.error();
    return;
  }
  shared = std::move(mapped.value());
  const std::uint64_t rss_before = current_rss_bytes();
  {
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      torch::Tensor& t = tensors[i];
      // No copy and no deleter: the bytes belong to the mapping, which outlives the module.
      torch::Tensor view = torch::from_blob(const_cast<void*>(shared->data(blob_of[i])), t.sizes(), [](void*) {},
                                            t.options().requires_grad(false));
      t.set_data(view);
    }
  }
  tensors.clear();
  blobs.clear();
  ::malloc_trim(0);
  const std::uint64_t rss_after = current_rss_bytes();
  report.shared = true;
  report.created = shared->created();
  report.bytes = shared->mapped_bytes();
  report.tensors = blob_of.size();
  report.private_rss_freed_bytes = rss_before > rss_after ? rss_before - rss_after : 0;
}

TorchEmissionModel::TorchEmissionModel(const std::filesystem::path& model_path, ModelInfo info,
                                       const std::filesystem::path& shared_weights, bool tensor_cache)
    : impl_(std::make_unique<Impl>()), info_(std::move(info)), model_path_(model_path) {
  try {
    impl_->module = torch::jit::load(model_path.string(), torch::kCPU);
    impl_->module.eval();
  } catch (const std::exception& e) {
    throw std::runtime_error(model_path.string() + ": LibTorch " + std::to_string(TORCH_VERSION_MAJOR) + "." +
                             std::to_string(TORCH_VERSION_MINOR) +
                             " cannot load this model as TorchScript (" + first_line(e.what()) +
                             "); export it with torch.jit.script or torch.jit.trace and torch.jit.save from a "
                             "PyTorch whose TorchScript LibTorch 1.13 can read (PyTorch <= 1.13), see "
                             "docs/worker-protocol.md");
  }
  if (!impl_->module.find_method("forward")) {
    throw std::runtime_error(model_path.string() + ": the TorchScript module has no forward(); it must follow the "
                             "wav2vec2 contract forward(waveforms, lengths) -> (emissions, lengths)");
  }
  if (!shared_weights.empty()) impl_->share(shared_weights, sharing_);
  // After the load: the weights never pass through the cache (freed by share(), they would stay
  // cached, private memory).
  if (tensor_cache) install_torch_block_cache(kMallocMmapThresholdKib << 10);
}

std::optional<ScratchStats> TorchEmissionModel::release_scratch() {
  const std::optional<BlockCache::Stats> s = release_torch_block_cache();
  if (!s) return std::nullopt;
  return ScratchStats{s->high_water_bytes, s->hits, s->misses};
}

TorchEmissionModel::~TorchEmissionModel() = default;

EmissionChunk TorchEmissionModel::compute(const float* samples, std::size_t count) {
  const auto n = static_cast<std::int64_t>(count);
  try {
    c10::InferenceMode inference;
    // from_blob does not copy; the model only reads its input.
    torch::Tensor wav = torch::from_blob(const_cast<float*>(samples), {1, n}, torch::kFloat32);
    torch::Tensor lengths = torch::full({1}, n, torch::kInt64);
    torch::IValue out = impl_->module.forward({wav, lengths});
    torch::Tensor em;
    if (out.isTuple()) {
      const auto& elems = out.toTupleRef().elements();
      if (elems.empty() || !elems[0].isTensor()) {
        throw std::runtime_error("forward() returned a tuple whose first element is not a tensor");
      }
      em = elems[0].toTensor();
    } else if (out.isTensor()) {
      em = out.toTensor();
    } else {
      throw std::runtime_error("forward() must return (emissions [1, T, C], lengths)");
    }
    if (em.dim() == 3 && em.size(0) == 1) em = em.squeeze(0);
    if (em.dim() != 2 || em.size(1) != static_cast<std::int64_t>(info_.labels.size())) {
      throw std::runtime_error("forward() returned emissions of shape " + c10::str(em.sizes()) + ", expected [1, T, " +
                               std::to_string(info_.labels.size()) + "] (one column per sidecar label)");
    }
    em = em.to(torch::kFloat32);
    if (info_.outputs == ModelInfo::Outputs::kLogits) em = torch::log_softmax(em, -1);
    em = em.contiguous();
    EmissionChunk chunk;
    chunk.frames = em.size(0);
    chunk.labels = em.size(1);
    chunk.log_probs.resize(static_cast<std::size_t>(chunk.frames * chunk.labels));
    std::memcpy(chunk.log_probs.data(), em.data_ptr<float>(), chunk.log_probs.size() * sizeof(float));
    return chunk;
  } catch (const EngineOutOfMemory&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    // c10::Error from LibTorch itself; errors raised inside the TorchScript interpreter (an
    // allocation failure among them) arrive as other std::exception types with a traceback.
    const std::string msg = e.what();
    if (is_out_of_memory(msg)) throw EngineOutOfMemory("LibTorch: " + summary(msg));
    throw std::runtime_error(model_path_.filename().string() + ": the model failed on a window of " +
                             std::to_string(n) + " samples: " + summary(msg));
  }
}

}  // namespace ab
