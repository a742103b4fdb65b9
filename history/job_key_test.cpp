// Job key tests: streamed XXH3-128 of model + sidecar on real files; command templates.
#include "history/job_key.h"

#include "tests/testutil/temp_dir.h"

#include <doctest/doctest.h>
#include <xxhash.h>

#include <fmt/format.h>

#include <random>

namespace {

std::string random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

// The one-shot XXH3-128 of model bytes, a NUL, then sidecar bytes: an independent path to the
// value the streamed hash must reach.
std::string one_shot_key(const std::string& model, const std::string& sidecar) {
  const std::string all = model + std::string(1, '\0') + sidecar;
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(all.data(), all.size()));
  std::string hex = "ctc:";
  for (unsigned char b : c.digest) hex += fmt::format("{:02x}", b);
  return hex;
}

}  // namespace

TEST_CASE("model key: streamed hash of a 3.5 MiB model (several read chunks) + sidecar") {
  ab::test::TempDir dir;
  const auto model = random_bytes(3 * 1024 * 1024 + 512 * 1024, 1);
  const std::string sidecar = R"({"labels": ["<blk>", "|", "a"], "blank": 0})";
  const auto path = dir.write("m/model.pt", model);
  dir.write("m/model.json", sidecar);
  const auto key = ab::job_key_for_model(path);
  REQUIRE(key.ok());
  CHECK(key.value().size() == 4 + 32);
  CHECK(key.value() == one_shot_key(model, sidecar));
}

TEST_CASE("model key changes with the model and with the sidecar; absent sidecar hashes empty") {
  ab::test::TempDir dir;
  auto model = random_bytes(100000, 2);
  const auto path = dir.write("model.pt", model);
  const auto no_sidecar = ab::job_key_for_model(path);
  REQUIRE(no_sidecar.ok());
  CHECK(no_sidecar.value() == one_shot_key(model, ""));

  dir.write("model.json", "{}");
  const auto with_sidecar = ab::job_key_for_model(path);
  REQUIRE(with_sidecar.ok());
  CHECK(with_sidecar.value() != no_sidecar.value());

  model[50000] ^= 1;  // one flipped bit
  dir.write("model.pt", model);
  const auto changed = ab::job_key_for_model(path);
  REQUIRE(changed.ok());
  CHECK(changed.value() != with_sidecar.value());
  CHECK(ab::job_key_for_model(path).value() == changed.value());  // stable
}

TEST_CASE("model key of a missing file: an error naming it") {
  ab::test::TempDir dir;
  const auto key = ab::job_key_for_model(dir.path() / "nope.pt");
  CHECK_FALSE(key.ok());
  CHECK(key.error().find((dir.path() / "nope.pt").string()) != std::string::npos);
  CHECK(key.error().find("cannot read") != std::string::npos);
}

TEST_CASE("sidecar path and command keys") {
  CHECK(ab::sidecar_path("/m/wav2vec2.pt") == "/m/wav2vec2.json");
  CHECK(ab::job_key_for_command({"mytool", "--fast", "{in}", "{out}"}) ==
        "cmd:mytool --fast {in} {out}");
  CHECK(ab::job_key_for_command({"mytool", "{in}", "{out}"}) !=
        ab::job_key_for_command({"mytool", "--fast", "{in}", "{out}"}));
}
