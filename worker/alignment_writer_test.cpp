// Tests for the outputs: TextGrid structure and times parsed back, JSON, CTM, atomic writes.
#include "worker/alignment_writer.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "worker/atomic_file.h"
#include "tests/testutil/temp_dir.h"

namespace {

/// A minimal reader for the long TextGrid format: tiers with their intervals.
struct Interval {
  double xmin, xmax;
  std::string text;
};
struct Tier {
  std::string name;
  double xmin = 0, xmax = 0;
  std::size_t declared = 0;
  std::vector<Interval> intervals;
};
struct Grid {
  double xmin = -1, xmax = -1;
  std::size_t size = 0;
  std::vector<Tier> tiers;
};

Grid parse_textgrid(const std::string& text) {
  Grid g;
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);
  REQUIRE(line == "File type = \"ooTextFile\"");
  std::getline(in, line);
  REQUIRE(line == "Object class = \"TextGrid\"");
  const std::regex num(R"(^\s*(xmin|xmax) = ([0-9.eE+-]+)\s*$)");
  const std::regex str(R"(^\s*(name|text) = \"(.*)\"\s*$)");
  const std::regex sz(R"(^\s*(size|intervals: size) = (\d+)\s*$)");
  std::smatch m;
  bool in_interval = false;
  while (std::getline(in, line)) {
    if (line.find("item [") != std::string::npos && line.find("item []") == std::string::npos) {
      g.tiers.emplace_back();
      in_interval = false;
    } else if (line.find("intervals [") != std::string::npos) {
      g.tiers.back().intervals.push_back({-1, -1, "?"});
      in_interval = true;
    } else if (std::regex_match(line, m, num)) {
      const double v = std::stod(m[2]);
      double* target;
      if (g.tiers.empty()) target = m[1] == "xmin" ? &g.xmin : &g.xmax;
      else if (!in_interval) target = m[1] == "xmin" ? &g.tiers.back().xmin : &g.tiers.back().xmax;
      else target = m[1] == "xmin" ? &g.tiers.back().intervals.back().xmin : &g.tiers.back().intervals.back().xmax;
      *target = v;
    } else if (std::regex_match(line, m, str)) {
      if (m[1] == "name") g.tiers.back().name = m[2];
      else g.tiers.back().intervals.back().text = m[2];
    } else if (std::regex_match(line, m, sz)) {
      if (m[1] == "size") g.size = std::stoul(m[2]);
      else g.tiers.back().declared = std::stoul(m[2]);
    }
  }
  return g;
}

ab::TimedAlignment sample() {
  ab::TimedAlignment t;
  t.utterance_id = "spk1_utt";
  t.duration_s = 3.0;
  t.words = {{"Hello,", 0.5, 1.2, -0.1}, {"say \"hi\"", 1.2, 2.0, -0.7}};
  t.tokens = {{"h", 0.5, 0.6, -0.1}, {"i", 1.3, 1.5, -0.2}};
  return t;
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("TextGrid: two tiers covering [0, duration], gaps as empty intervals, times exact") {
  const Grid g = parse_textgrid(ab::format_textgrid(sample()));
  CHECK(g.xmin == 0.0);
  CHECK(g.xmax == 3.0);
  CHECK(g.size == 2);
  REQUIRE(g.tiers.size() == 2);
  CHECK(g.tiers[0].name == "words");
  CHECK(g.tiers[1].name == "tokens");
  const auto& w = g.tiers[0].intervals;
  REQUIRE(w.size() == 4);  // gap, Hello, say "hi", gap
  CHECK(g.tiers[0].declared == 4);
  CHECK(w[0].text == "");
  CHECK(w[0].xmax == 0.5);
  CHECK(w[1].text == "Hello,");
  CHECK(w[1].xmin == 0.5);
  CHECK(w[1].xmax == 1.2);
  CHECK(w[2].text == "say \"\"hi\"\"");  // Praat doubles quotes
  CHECK(w[3].xmin == 2.0);
  CHECK(w[3].xmax == 3.0);
  const auto& t = g.tiers[1].intervals;
  REQUIRE(t.size() == 5);  // gap h gap i gap
  CHECK(g.tiers[1].declared == 5);
  for (const Tier& tier : g.tiers) {
    CHECK(tier.intervals.front().xmin == 0.0);
    CHECK(tier.intervals.back().xmax == 3.0);
    for (std::size_t i = 1; i < tier.intervals.size(); ++i) CHECK(tier.intervals[i].xmin == tier.intervals[i - 1].xmax);
  }
}

TEST_CASE("times come from frames: frame * samples_per_frame / sample_rate") {
  ab::Alignment a;
  a.tokens = {{2, 10, 15, -0.2f}, {1, 15, 16, -0.1f}, {3, 20, 30, -0.4f}};
  ab::Transcript tr;
  tr.tokens = {2, 1, 3};
  tr.words = {{"A", 0, 1}, {"B", 2, 1}};
  ab::LabelSet labels;
  labels.labels = {"<blk>", "|", "a", "b"};
  labels.word_separator = "|";
  const auto timed = ab::timed_from_alignment(a, tr, labels, {320, 16000}, 1.0, "u");
  REQUIRE(timed.words.size() == 2);
  CHECK(timed.words[0].start_s == doctest::Approx(0.2));
  CHECK(timed.words[0].end_s == doctest::Approx(0.3));
  CHECK(timed.words[1].start_s == doctest::Approx(0.4));
  CHECK(timed.words[1].end_s == doctest::Approx(0.6));
  REQUIRE(timed.tokens.size() == 2);  // the separator is not a token interval
  CHECK(timed.tokens[1].text == "b");
}

TEST_CASE("JSON and CTM carry times and scores") {
  const auto j = nlohmann::json::parse(ab::format_json(sample()));
  CHECK(j["utterance"] == "spk1_utt");
  CHECK(j["duration_s"].get<double>() == 3.0);
  REQUIRE(j["words"].size() == 2);
  CHECK(j["words"][1]["text"] == "say \"hi\"");
  CHECK(j["words"][1]["start_s"].get<double>() == 1.2);
  CHECK(j["words"][1]["score"].get<double>() == doctest::Approx(-0.7));
  CHECK(j["tokens"].size() == 2);
  ab::TimedAlignment t = sample();
  t.words.pop_back();
  CHECK(ab::format_ctm(t) == "spk1_utt 1 0.500 0.700 Hello, 0.9048\n");
}

TEST_CASE("write_alignment_outputs writes three complete files and no leftovers") {
  ab::test::TempDir dir("ab-out");
  const std::string base = (dir.path() / "a").string();
  const auto r = ab::write_alignment_outputs(sample(), base);
  REQUIRE(r.ok());
  CHECK(r.value() == std::vector<std::string>{base + ".TextGrid", base + ".json", base + ".ctm"});
  CHECK(slurp(base + ".TextGrid") == ab::format_textgrid(sample()));
  CHECK(slurp(base + ".json") == ab::format_json(sample()));
  std::size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) (void)e, ++files;
  CHECK(files == 3);
}

TEST_CASE("atomic write: replaces whole, and a failed write leaves no partial file under the name") {
  ab::test::TempDir dir("ab-atomic");
  const std::string path = (dir.path() / "x.json").string();
  REQUIRE(ab::write_file_atomically(path, "old").ok());
  REQUIRE(ab::write_file_atomically(path, std::string(100000, 'n')).ok());
  CHECK(slurp(path) == std::string(100000, 'n'));

  // A missing output directory fails at create and leaves nothing behind (the full-disk case,
  // failing mid-write, is the next test).
  const auto missing_dir = ab::write_file_atomically((dir.path() / "no/such/dir/y.json").string(), "data");
  REQUIRE_FALSE(missing_dir.ok());
  CHECK(missing_dir.error().find("y.json") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir.path() / "no"));
}

TEST_CASE("atomic write: running out of space mid-write keeps the old file intact and removes the temp") {
  // A 64 KiB tmpfs needs mount privileges; without them, skip with the reason.
  ab::test::TempDir dir("ab-atomic-full");
  const std::filesystem::path mnt = dir.path() / "small";
  std::filesystem::create_directory(mnt);
  const std::string cmd = "mount -t tmpfs -o size=64k tmpfs " + mnt.string() + " 2>/dev/null";
  if (std::system(cmd.c_str()) != 0) {
    MESSAGE("skipped: cannot mount a small tmpfs here (needs root)");
    return;
  }
  struct Unmount {
    std::string path;
    ~Unmount() { std::system(("umount " + path).c_str()); }
  } unmount{mnt.string()};
  const std::string path = (mnt / "out.TextGrid").string();
  REQUIRE(ab::write_file_atomically(path, "previous complete content").ok());
  const auto r = ab::write_file_atomically(path, std::string(1 << 20, 'x'));  // 1 MiB into 64 KiB
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().find("out.TextGrid") != std::string::npos);
  CHECK(r.error().find("No space left") != std::string::npos);
  CHECK(slurp(path) == "previous complete content");
  std::size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(mnt)) (void)e, ++files;
  CHECK(files == 1);
}

TEST_CASE("atomic write: a writer killed mid-write never leaves a partial file under the final name") {
  ab::test::TempDir dir("ab-atomic-kill");
  const std::string path = (dir.path() / "big.json").string();
  const std::size_t size = 256u << 20;  // large enough that the kill usually lands mid-write
  int landed_mid_write = 0;
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::filesystem::remove(path);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      const std::string content(size, 'x');
      ::_exit(ab::write_file_atomically(path, content).ok() ? 0 : 1);
    }
    // Kill as soon as the temporary file has some data in it.
    bool temp_seen = false;
    for (int i = 0; i < 20000 && !temp_seen; ++i) {
      for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
        std::error_code ec;
        if (e.path().filename().string().rfind(".big.json.tmp.", 0) == 0 && e.file_size(ec) > 0 && !ec) temp_seen = true;
      }
      if (!temp_seen) ::usleep(500);
    }
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    // The invariant: the final name is absent or complete, never partial.
    if (std::filesystem::exists(path)) {
      CHECK(std::filesystem::file_size(path) == size);
    } else {
      ++landed_mid_write;
    }
    for (const auto& e : std::filesystem::directory_iterator(dir.path())) std::filesystem::remove(e.path());
  }
  MESSAGE("kills that landed mid-write: " << landed_mid_write << " of 3");
}
