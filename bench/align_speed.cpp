// align_speed: runs ab::align_ctc on emissions.npy/tokens.npy from bench/align_speed.py and writes
// the token spans and the timing, for the speed comparison in bench/align_speed.sh.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "worker/ctc_aligner.h"

namespace {

/// Reads a C-order .npy array of the given dtype ("<f4" or "<i4"); fills shape.
template <class T>
bool read_npy(const std::string& path, const char* dtype, std::vector<T>& data, std::vector<long>& shape) {
  std::ifstream in(path, std::ios::binary);
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) return false;
  std::size_t header_len = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    in.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    in.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (std::size_t(b[3]) << 24);
  }
  std::string header(header_len, '\0');
  in.read(header.data(), std::streamsize(header_len));
  if (header.find(dtype) == std::string::npos || header.find("'fortran_order': False") == std::string::npos)
    return false;
  const std::size_t open = header.find('('), close = header.find(')');
  std::stringstream dims(header.substr(open + 1, close - open - 1));
  std::string item;
  std::size_t n = 1;
  while (std::getline(dims, item, ','))
    if (item.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stol(item)), n *= std::size_t(shape.back());
  data.resize(n);
  return bool(in.read(reinterpret_cast<char*>(data.data()), std::streamsize(n * sizeof(T))));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: align_speed DIR exact|banded MAX_TRELLIS_MIB\n");
    return 2;
  }
  const std::string dir = argv[1], name = argv[2];
  std::vector<float> em;
  std::vector<int> tokens;
  std::vector<long> em_shape, tok_shape;
  if (!read_npy(dir + "/emissions.npy", "<f4", em, em_shape) || em_shape.size() != 2 ||
      !read_npy(dir + "/tokens.npy", "<i4", tokens, tok_shape)) {
    std::fprintf(stderr, "align_speed: cannot read %s/emissions.npy (float32 [T, C]) or tokens.npy (int32)\n",
                 dir.c_str());
    return 1;
  }
  ab::AlignerConfig config;
  config.blank = 0;
  config.max_trellis_bytes = std::stoull(argv[3]) << 20;
  // "exact": the whole trellis whatever its size (up to the cap); "banded": the worker's defaults.
  if (name == "exact") config.max_exact_bytes = config.max_trellis_bytes;
  config.source_name = dir;
  const ab::EmissionView view{em.data(), em_shape[0], int(em_shape[1])};
  // Best of kRuns: the machine is shared, the minimum is the least disturbed run (the Python peer does the same).
  constexpr int kRuns = 3;
  double wall_s = 1e300;
  ab::Result<ab::Alignment> result = ab::Result<ab::Alignment>::failure("not run");
  for (int run = 0; run < kRuns; ++run) {
    const auto start = std::chrono::steady_clock::now();
    result = ab::align_ctc(view, tokens, config);
    wall_s = std::min(wall_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  if (!result.ok()) {
    std::fprintf(stderr, "align_speed: %s\n", result.error().c_str());
    return 1;
  }
  std::ofstream spans(dir + "/cpp_" + name + "_spans.txt");
  for (const auto& t : result->tokens) spans << t.start_frame << ' ' << t.end_frame << '\n';
  std::ofstream info(dir + "/cpp_" + name + ".json");
  info << std::setprecision(10);
  info << "{\"wall_s\": " << wall_s << ", \"log_prob\": " << result->log_prob << ", \"work_bytes\": "
       << result->work_bytes << ", \"band_states\": " << result->band_states << ", \"states\": " << result->states
       << ", \"exact\": " << (result->exact ? "true" : "false") << "}\n";
  std::printf("C++ %s: %.3f s (best of %d, cap %s MiB, %s, band %lld, %d pass(es))\n", name.c_str(), wall_s, kRuns, argv[3],
              result->exact ? "exact" : "banded", static_cast<long long>(result->band_states), result->passes);
  return 0;
}
