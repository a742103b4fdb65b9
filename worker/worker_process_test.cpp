// Tests that run the REAL align-batch-worker over stdin/stdout with a TorchScript tone model made
// by make-tone-model: alignment boundaries, transcription, formats and rates, bad input, death.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "tests/testutil/audio_gen.h"
#include "tests/testutil/temp_dir.h"
#include "worker/test_jobs.h"
#include "protocol/status_block.h"
#include "worker/tools/tone_spec.h"

namespace ab {

namespace {

using nlohmann::json;

/// The worker as a child process: its stdin and stdout are pipes, its stderr a log file.
class WorkerProcess {
 public:
  WorkerProcess(const std::vector<std::string>& args, const std::string& log_path) {
    int in_pipe[2], out_pipe[2];
    REQUIRE(pipe2(in_pipe, O_CLOEXEC) == 0);
    REQUIRE(pipe2(out_pipe, O_CLOEXEC) == 0);
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      dup2(in_pipe[0], 0);
      dup2(out_pipe[1], 1);
      const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (log >= 0) dup2(log, 2);
      std::vector<char*> argv;
      std::string bin = AB_WORKER_BIN;
      argv.push_back(bin.data());
      std::vector<std::string> copy = args;
      for (auto& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(bin.c_str(), argv.data());
      _exit(127);
    }
    close(in_pipe[0]);
    close(out_pipe[1]);
    stdin_fd_ = in_pipe[1];
    stdout_ = fdopen(out_pipe[0], "r");
  }
  ~WorkerProcess() {
    close_stdin();
    if (stdout_) std::fclose(stdout_);
    if (pid_ > 0 && !status_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  void send(const std::string& line) {
    const std::string l = line + "\n";
    REQUIRE(write(stdin_fd_, l.data(), l.size()) == static_cast<ssize_t>(l.size()));
  }
  /// Next stdout line, or nullopt at EOF.
  std::optional<std::string> read_line() {
    char* buf = nullptr;
    size_t cap = 0;
    const ssize_t n = getline(&buf, &cap, stdout_);
    std::optional<std::string> r;
    if (n > 0) r = std::string(buf, n > 0 && buf[n - 1] == '\n' ? n - 1 : n);
    std::free(buf);
    return r;
  }
  /// Next line that is not a progress line, parsed; null json at EOF.
  json read_result() {
    while (auto l = read_line()) {
      json j = json::parse(*l);
      if (!j.contains("progress")) return j;
    }
    return json();
  }
  void close_stdin() {
    if (stdin_fd_ >= 0) close(stdin_fd_);
    stdin_fd_ = -1;
  }
  /// Waits for the process; returns its raw wait status.
  int wait() {
    if (!status_) {
      int st = 0;
      REQUIRE(waitpid(pid_, &st, 0) == pid_);
      status_ = st;
    }
    return *status_;
  }

 private:
  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  FILE* stdout_ = nullptr;
  std::optional<int> status_;
};

/// One tone-model fixture per test binary: tone.pt (log_probs) and tone_logits.pt (logits).
const test::TempDir& models() {
  static test::TempDir dir("ab-tone-model");
  static bool made = [] {
    const std::string cmd1 = std::string(AB_MAKE_TONE_MODEL_BIN) + " " + (dir.path() / "tone.pt").string() + " >/dev/null";
    const std::string cmd2 =
        std::string(AB_MAKE_TONE_MODEL_BIN) + " --logits " + (dir.path() / "tone_logits.pt").string() + " >/dev/null";
    return std::system(cmd1.c_str()) == 0 && std::system(cmd2.c_str()) == 0;
  }();
  REQUIRE(made);
  return dir;
}
std::string tone_model() { return (models().path() / "tone.pt").string(); }

/// One token of the test utterance: its label (index into tone::labels(), 0 = silence) and length.
struct Piece {
  int label;
  double duration_s;
};
/// "bad cafe hh": words separated by the "|" tone, a blank inside "bad", a repeated "h" with a
/// silence between its copies. Durations are not multiples of the 20 ms frame.
const std::vector<Piece>& utterance() {
  static const std::vector<Piece> kPieces = {
      {0, 0.203}, {3, 0.151}, {2, 0.117}, {0, 0.043}, {5, 0.171}, {1, 0.097}, {4, 0.133}, {2, 0.109},
      {7, 0.142}, {6, 0.157}, {0, 0.061}, {1, 0.093}, {9, 0.121}, {0, 0.067}, {9, 0.129}, {0, 0.297}};
  return kPieces;
}
const char* kUtteranceText = "bad cafe hh";

/// Truth: each letter's [start, end) in seconds, in order (separators and silences left out).
std::vector<std::pair<double, double>> letter_truth() {
  std::vector<std::pair<double, double>> r;
  double t = 0;
  for (const Piece& p : utterance()) {
    if (p.label >= 2) r.emplace_back(t, t + p.duration_s);
    t += p.duration_s;
  }
  return r;
}

std::vector<test::Tone> utterance_tones() {
  std::vector<test::Tone> tones;
  for (const Piece& p : utterance()) tones.push_back({p.label ? tone::frequency_hz(p.label) : 0.0, p.duration_s, 0.5});
  return tones;
}

std::string write_utterance(const test::TempDir& dir, const test::AudioFormat& f, int rate, int channels) {
  const auto path = (dir.path() / ("u_" + std::to_string(rate) + "_" + std::to_string(channels) + f.extension)).string();
  const std::string err = test::write_tones(path, f, rate, channels, utterance_tones());
  REQUIRE_MESSAGE(err.empty(), err);
  return path;
}

using test::job_line;
using test::read_json_file;

/// Largest distance between the aligned letters and the truth, in seconds; -1 if counts differ.
double worst_boundary_error_s(const json& out) {
  const auto truth = letter_truth();
  if (out["tokens"].size() != truth.size()) return -1;
  double worst = 0;
  for (std::size_t i = 0; i < truth.size(); ++i) {
    worst = std::max(worst, std::fabs(out["tokens"][i]["start_s"].get<double>() - truth[i].first));
    worst = std::max(worst, std::fabs(out["tokens"][i]["end_s"].get<double>() - truth[i].second));
  }
  return worst;
}

constexpr double kFrameS = double(tone::kSamplesPerFrame) / tone::kSampleRateHz;

/// Starts a worker on `model` and checks its ready line.
std::unique_ptr<WorkerProcess> start_worker(const test::TempDir& dir, const std::string& model,
                                            std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--model", model};
  args.insert(args.end(), extra.begin(), extra.end());
  auto w = std::make_unique<WorkerProcess>(args, (dir.path() / "worker.log").string());
  const json ready = json::parse(w->read_line().value_or("null"));
  REQUIRE_MESSAGE(ready.is_object(), "no ready line");
  REQUIRE_MESSAGE(ready["ready"] == true, ready.dump());
  return w;
}

}  // namespace

TEST_CASE("worker process: ready line, exact alignment boundaries and transcription, exit 0 at EOF") {
  test::TempDir dir;
  const std::string audio = write_utterance(dir, test::audio_formats().front(), 16000, 1);
  const auto transcript = dir.write("u.txt", "Bad cafe,\nHH!\n").string();
  for (const char* model : {"tone.pt", "tone_logits.pt"}) {
    CAPTURE(model);
    WorkerProcess w({"--model", (models().path() / model).string(), "--threads", "2"}, (dir.path() / "w.log").string());
    const json ready = json::parse(w.read_line().value());
    CHECK(ready["ready"] == true);
    CHECK(ready["pid"] == w.pid());
    CHECK(ready["sample_rate"] == 16000);
    CHECK(ready["labels"] == 10);
    CHECK(ready["threads"] == 2);
    CHECK(ready["rss_bytes"].get<std::uint64_t>() > 10'000'000u);

    w.send(job_line(1, audio, (dir.path() / "al").string(), "align", transcript));
    w.send(job_line(2, audio, (dir.path() / "tr").string(), "transcribe"));
    const json a = w.read_result();
    REQUIRE_MESSAGE(a["ok"] == true, a.dump());
    CHECK(a["id"] == 1);
    CHECK(a["frames"] == 104);  // 2.080 s / 20 ms
    const json aligned = read_json_file((dir.path() / "al.json").string());
    const double worst = worst_boundary_error_s(aligned);
    MESSAGE(model << ": worst boundary error " << worst * 1000 << " ms");
    CHECK(worst >= 0);
    CHECK(worst <= kFrameS + 1e-9);
    REQUIRE(aligned["words"].size() == 3);
    CHECK(aligned["words"][0]["text"] == "Bad");
    CHECK(aligned["words"][2]["text"] == "HH!");

    const json t = w.read_result();
    REQUIRE_MESSAGE(t["ok"] == true, t.dump());
    CHECK(t["text"] == kUtteranceText);
    const json heard = read_json_file((dir.path() / "tr.json").string());
    CHECK(worst_boundary_error_s(heard) <= kFrameS + 1e-9);
    CHECK(worst_boundary_error_s(heard) >= 0);

    w.close_stdin();
    CHECK(!w.read_line());
    const int st = w.wait();
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
  }
}

TEST_CASE("worker process: every format, 8/22.05/44.1/48 kHz, mono and stereo give the same answer") {
  test::TempDir dir;
  auto w = start_worker(dir, tone_model());
  int id = 0, checked = 0;
  const auto transcript = dir.write("u.txt", "bad cafe hh").string();
  for (const test::AudioFormat& f : test::audio_formats()) {
    for (int rate : {8000, 16000, 22050, 44100, 48000}) {
      for (int channels : {1, 2}) {
        if (!test::can_write(f, rate, channels)) {
          MESSAGE("skipped: this libsndfile cannot write " << f.name << " at " << rate << " Hz");
          continue;
        }
        CAPTURE(f.name);
        CAPTURE(rate);
        CAPTURE(channels);
        const std::string audio = write_utterance(dir, f, rate, channels);
        w->send(job_line(++id, audio, (dir.path() / "al").string(), "align", transcript));
        const json a = w->read_result();
        REQUIRE_MESSAGE(a["ok"] == true, a.dump());
        const double worst_align = worst_boundary_error_s(read_json_file((dir.path() / "al.json").string()));
        w->send(job_line(++id, audio, (dir.path() / "tr").string(), "transcribe"));
        const json t = w->read_result();
        REQUIRE_MESSAGE(t["ok"] == true, t.dump());
        CHECK(t["text"] == kUtteranceText);
        const double worst_tr = worst_boundary_error_s(read_json_file((dir.path() / "tr.json").string()));
        CHECK(worst_align >= 0);
        CHECK(worst_align <= kFrameS + 1e-9);
        CHECK(worst_tr >= 0);
        CHECK(worst_tr <= kFrameS + 1e-9);
        if (worst_align > kFrameS || worst_tr > kFrameS) {
          MESSAGE(f.name << " " << rate << " Hz x" << channels << ": worst " << worst_align * 1000 << " / "
                         << worst_tr * 1000 << " ms");
        }
        ++checked;
      }
    }
  }
  MESSAGE(checked << " format/rate/channel combinations checked");
  CHECK(checked >= 20);  // wav, flac, ogg, aiff at 5 rates x 2 layouts at least
}

TEST_CASE("worker process: small windows stitch to the same alignment as the default windows") {
  test::TempDir dir;
  const std::string audio = write_utterance(dir, test::audio_formats().front(), 44100, 2);
  const auto transcript = dir.write("u.txt", "bad cafe hh").string();
  auto big = start_worker(dir, tone_model());
  auto small = start_worker(dir, tone_model(), {"--window-s", "0.3", "--context-s", "0.1"});
  big->send(job_line(1, audio, (dir.path() / "big").string(), "align", transcript));
  small->send(job_line(1, audio, (dir.path() / "small").string(), "align", transcript));
  const json b = big->read_result(), s = small->read_result();
  REQUIRE_MESSAGE(b["ok"] == true, b.dump());
  REQUIRE_MESSAGE(s["ok"] == true, s.dump());
  CHECK(b["windows"] == 1);
  CHECK(s["windows"].get<int>() >= 7);
  const json bt = read_json_file((dir.path() / "big.json").string())["tokens"];
  const json st = read_json_file((dir.path() / "small.json").string())["tokens"];
  REQUIRE(bt.size() == st.size());
  for (std::size_t i = 0; i < bt.size(); ++i) {
    CHECK(bt[i]["text"] == st[i]["text"]);
    CHECK(bt[i]["start_s"] == st[i]["start_s"]);  // the same frames, exactly
    CHECK(bt[i]["end_s"] == st[i]["end_s"]);
    // Scores differ only by float rounding: the convolution runs at other offsets in other windows.
    CHECK(bt[i]["score"].get<double>() == doctest::Approx(st[i]["score"].get<double>()).epsilon(1e-4));
  }
}

TEST_CASE("worker process: each bad input is a clear per-job error and the worker takes the next job") {
  test::TempDir dir;
  const test::AudioFormat wav = test::audio_formats().front();
  const std::string good = write_utterance(dir, wav, 16000, 1);
  const auto good_txt = dir.write("good.txt", "bad cafe hh").string();

  const auto empty = dir.write("empty.wav", "").string();
  std::string whole;
  {
    std::ifstream in(good, std::ios::binary);
    whole.assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto truncated = dir.write("truncated.wav", whole.substr(0, whole.size() / 2)).string();
  const auto text_wav = dir.write("notes.wav", "this is a text file, not audio\n").string();
  const auto zero = (dir.path() / "zero.wav").string();
  REQUIRE(test::write_audio(zero, wav, 16000, 1, {}).empty());
  const auto tiny = (dir.path() / "tiny.wav").string();
  REQUIRE(test::write_audio(tiny, wav, 16000, 1, std::vector<float>(150, 0.3f)).empty());  // < 320 samples
  const auto outside = dir.write("outside.txt", "bad xyz cafe").string();
  const auto latin1 = dir.write("latin1.txt", "caf\xe9 bad").string();
  const auto missing = (dir.path() / "missing.wav").string();
  const auto a_dir = (dir.path() / "adir.wav").string();
  std::filesystem::create_directory(a_dir);

  struct Bad {
    std::string name;
    std::string audio;
    std::string transcript;
    std::string expect;  ///< in the error, after the file name
  };
  const std::vector<Bad> cases = {
      {"empty file", empty, "", empty},
      {"truncated file", truncated, "", truncated},
      {"text renamed .wav", text_wav, "", text_wav},
      {"zero-length audio", zero, "", zero},
      {"shorter than one frame", tiny, "", "shorter than one model frame (20 ms)"},
      {"characters outside the model", good, outside, "x"},
      {"non-UTF-8 transcript", good, latin1, "not valid UTF-8 at byte offset 3"},
      {"missing file", missing, "", missing},
      {"unreadable (a directory)", a_dir, "", a_dir},
      {"missing transcript", good, (dir.path() / "nope.txt").string(), "nope.txt"},
  };
  auto w = start_worker(dir, tone_model());
  int id = 100;
  for (const Bad& c : cases) {
    CAPTURE(c.name);
    w->send(job_line(++id, c.audio, (dir.path() / "bad").string(), c.transcript.empty() ? "transcribe" : "align", c.transcript));
    const json r = w->read_result();
    REQUIRE(r.is_object());
    CHECK(r["id"] == id);
    CHECK(r["ok"] == false);
    const std::string err = r.value("error", "");
    MESSAGE(c.name << ": " << err);
    CHECK(err.find(c.transcript.empty() ? c.audio : c.transcript) == 0);  // names the file first
    CHECK(err.find(c.expect) != std::string::npos);
    // The worker survives and takes the next job.
    w->send(job_line(++id, good, (dir.path() / "ok").string(), "align", good_txt));
    const json ok = w->read_result();
    CHECK_MESSAGE(ok["ok"] == true, ok.dump());
  }
  CHECK(!std::filesystem::exists(dir.path() / "bad.json"));
  w->close_stdin();
  CHECK(WIFEXITED(w->wait()));
}

TEST_CASE("worker process: a model LibTorch cannot load, or no sidecar, is ready:false and exit 3") {
  test::TempDir dir;
  const auto bad_pt = dir.write("broken.pt", "PK\x03\x04 this is not TorchScript").string();
  std::filesystem::copy_file(models().path() / "tone.json", dir.path() / "broken.json");
  const auto lonely = (dir.path() / "lonely.pt").string();
  std::filesystem::copy_file(models().path() / "tone.pt", lonely);
  for (const auto& [model, expect] : {std::pair<std::string, std::string>{bad_pt, "PyTorch <= 1.13"},
                                      std::pair<std::string, std::string>{lonely, "lonely.json"}}) {
    CAPTURE(model);
    WorkerProcess w({"--model", model}, (dir.path() / "w.log").string());
    const json r = json::parse(w.read_line().value_or("null"));
    REQUIRE(r.is_object());
    CHECK(r["ready"] == false);
    const std::string err = r.value("error", "");
    MESSAGE(err);
    CHECK(err.find(model == bad_pt ? bad_pt : (dir.path() / "lonely.json").string()) == 0);
    CHECK(err.find(expect) != std::string::npos);
    CHECK(!w.read_line());
    const int st = w.wait();
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 3);
  }
}

TEST_CASE("worker process: killed mid-job, the parent sees EOF and the signal") {
  test::TempDir dir;
  // Ten minutes of tone in 1 s windows: hundreds of windows, so the job is still running at the kill.
  const auto audio = (dir.path() / "long.wav").string();
  REQUIRE(test::write_tones(audio, test::audio_formats().front(), 16000, 1, {{tone::frequency_hz(2), 600.0, 0.5}}).empty());
  auto w = start_worker(dir, tone_model(), {"--window-s", "1", "--context-s", "0.1"});
  w->send(job_line(1, audio, (dir.path() / "long").string(), "transcribe"));
  const json first = json::parse(w->read_line().value_or("null"));
  REQUIRE(first.is_object());
  REQUIRE(first.contains("progress"));  // mid-job
  REQUIRE(kill(w->pid(), SIGKILL) == 0);
  int lines_after_kill = 0;
  bool saw_result = false;
  while (auto l = w->read_line()) {
    ++lines_after_kill;
    if (json::parse(*l).contains("ok")) saw_result = true;
  }
  CHECK(!saw_result);  // EOF, no result line: the parent knows the job did not finish
  const int st = w->wait();
  CHECK(WIFSIGNALED(st));
  CHECK(WTERMSIG(st) == SIGKILL);
  CHECK(!std::filesystem::exists(dir.path() / "long.json"));
}

TEST_CASE("worker process: the status block shows pid, phase, heartbeat and jobs done") {
  test::TempDir dir;
  const std::string name = "ab-test-worker-status-" + std::to_string(getpid());
  auto block = StatusBlock::create(name);
  const std::string audio = write_utterance(dir, test::audio_formats().front(), 16000, 1);
  auto w = start_worker(dir, tone_model(), {"--status-shm", name});
  // The loop enters idle right after the ready line; allow a loaded machine a few seconds.
  StatusSnapshot s;
  for (int i = 0; i < 500; ++i) {
    s = block->read();
    if (s.phase == WorkerPhase::kIdle) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(s.pid == w->pid());
  CHECK(s.phase == WorkerPhase::kIdle);
  const std::uint64_t beat0 = s.heartbeat;
  for (int i = 0; i < 500 && block->read().heartbeat <= beat0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(block->read().heartbeat > beat0);  // beats while idle, from its own thread
  CHECK(block->read().heap_bytes > 0u);

  w->send(job_line(9, audio, (dir.path() / "s").string(), "transcribe"));
  CHECK(w->read_result()["ok"] == true);
  s = block->read();
  CHECK(s.jobs_done == 1u);
  CHECK(!s.job_id);
  CHECK(s.phase == WorkerPhase::kIdle);
  w->close_stdin();
  w->wait();
  CHECK(block->read().phase == WorkerPhase::kExited);

  // No such block: the worker refuses to start, saying why.
  WorkerProcess bad({"--model", tone_model(), "--status-shm", name + "-missing"}, (dir.path() / "w.log").string());
  const json r = json::parse(bad.read_line().value_or("null"));
  CHECK(r["ready"] == false);
  CHECK(r.value("error", "").find("--status-shm") == 0);
  CHECK(WEXITSTATUS(bad.wait()) == 3);
}

TEST_CASE("worker process: it does not outlive its parent (PR_SET_PDEATHSIG)") {
  test::TempDir dir;
  int in_pipe[2], pid_pipe[2], out_pipe[2];
  REQUIRE(pipe(in_pipe) == 0);  // the test keeps the write end open: no EOF can end the worker
  REQUIRE(pipe(pid_pipe) == 0);
  REQUIRE(pipe(out_pipe) == 0);
  const pid_t middle = fork();
  REQUIRE(middle >= 0);
  if (middle == 0) {
    const pid_t worker = fork();
    if (worker == 0) {
      dup2(in_pipe[0], 0);
      dup2(out_pipe[1], 1);
      const int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 2);
      const std::string model = tone_model();
      execl(AB_WORKER_BIN, AB_WORKER_BIN, "--model", model.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    (void)!write(pid_pipe[1], &worker, sizeof worker);
    // Once the ready line is out the worker is past prctl; then its parent dies.
    char c = 0;
    while (read(out_pipe[0], &c, 1) == 1 && c != '\n') {
    }
    _exit(0);
  }
  pid_t worker = 0;
  REQUIRE(read(pid_pipe[0], &worker, sizeof worker) == sizeof worker);
  REQUIRE(waitpid(middle, nullptr, 0) == middle);
  // Gone (or a zombie awaiting its new parent) within a generous 10 s.
  bool gone = false;
  for (int i = 0; i < 1000 && !gone; ++i) {
    std::ifstream stat("/proc/" + std::to_string(worker) + "/stat");
    std::string pid_s, comm, state;
    gone = !(stat >> pid_s >> comm >> state) || state == "Z" || state == "X";
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(gone);
  if (!gone) kill(worker, SIGKILL);
  close(in_pipe[0]);
  close(in_pipe[1]);
  close(pid_pipe[0]);
  close(pid_pipe[1]);
  close(out_pipe[0]);
  close(out_pipe[1]);
}

}  // namespace ab

namespace ab {
namespace {

/// The smaps_rollup fields the sharing tests compare, in bytes.
struct Rollup {
  std::uint64_t pss = 0, pss_shmem = 0, private_bytes = 0, shared_bytes = 0;
};
Rollup rollup_of(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/smaps_rollup");
  Rollup r;
  std::string key;
  std::uint64_t kib = 0;
  std::string unit;
  std::getline(f, key);  // the "[rollup]" range line
  while (f >> key >> kib >> unit) {
    if (key == "Pss:") r.pss = kib << 10;
    if (key == "Pss_Shmem:") r.pss_shmem = kib << 10;
    if (key == "Private_Clean:" || key == "Private_Dirty:") r.private_bytes += kib << 10;
    if (key == "Shared_Clean:" || key == "Shared_Dirty:") r.shared_bytes += kib << 10;
  }
  return r;
}

/// A shared weights path under /dev/shm for one test, removed with it.
struct ShmPath {
  std::string path = "/dev/shm/ab-test-weights-" + std::to_string(::getpid()) + "-" + std::to_string(::rand());
  ~ShmPath() { std::remove(path.c_str()); }
};

std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

constexpr std::uint64_t kMiB = 1 << 20;

}  // namespace

TEST_CASE("worker process: workers of one model share one copy of its 64 MiB of weights, outputs byte-identical") {
  test::TempDir dir;
  const std::string model = (dir.path() / "big.pt").string();
  REQUIRE(std::system((std::string(AB_MAKE_TONE_MODEL_BIN) + " --ballast-mib 64 " + model + " >/dev/null").c_str()) == 0);
  const std::string audio = write_utterance(dir, test::audio_formats().front(), 16000, 1);
  const auto transcript = dir.write("u.txt", "bad cafe hh\n").string();

  // Sharing off: the worker holds its own copy of the 64 MiB (this is what the bound must beat).
  auto own = start_worker(dir, model);
  const Rollup alone = rollup_of(own->pid());
  CHECK(alone.pss >= 64 * kMiB);
  CHECK(alone.pss_shmem < kMiB);
  own->send(job_line(1, audio, (dir.path() / "private").string(), "align", transcript));
  REQUIRE(own->read_result()["ok"] == true);

  ShmPath shm;
  constexpr int kWorkers = 3;
  std::vector<std::unique_ptr<WorkerProcess>> ws;
  std::uint64_t weights = 0;
  for (int i = 0; i < kWorkers; ++i) {
    ws.push_back(std::make_unique<WorkerProcess>(
        std::vector<std::string>{"--model", model, "--shared-weights", shm.path}, (dir.path() / "w.log").string()));
    const json ready = json::parse(ws.back()->read_line().value_or("null"));
    REQUIRE_MESSAGE(ready["ready"] == true, ready.dump());
    REQUIRE_MESSAGE(ready.contains("shared_weights_bytes"), ready.dump());
    weights = ready["shared_weights_bytes"].get<std::uint64_t>();
  }
  CHECK(weights >= 64 * kMiB);
  CHECK(weights < 65 * kMiB);
  std::uint64_t sum_pss = 0;
  for (const auto& w : ws) {
    const Rollup r = rollup_of(w->pid());
    MESSAGE("sharing worker: PSS " << r.pss / kMiB << " MiB (Pss_Shmem " << r.pss_shmem / kMiB << "), private "
                                   << r.private_bytes / kMiB << " MiB, shared " << r.shared_bytes / kMiB << " MiB");
    // Every page is mapped by every worker, so PSS splits the one copy evenly (the status block
    // of a worker started with --status-shm would add a page; these have none).
    CHECK(r.pss_shmem >= weights / kWorkers - kMiB);
    CHECK(r.pss_shmem <= weights / kWorkers + kMiB);
    CHECK(r.shared_bytes >= weights);
    sum_pss += r.pss;
  }
  // The bound: one copy of the weights plus, per worker, what a private worker holds besides its
  // weights, plus 16 MiB for heap noise across four processes. Three private copies would be
  // 128 MiB above it.
  const std::uint64_t bound = weights + kWorkers * (alone.pss - weights) + 16 * kMiB;
  MESSAGE("sum of PSS of " << kWorkers << " sharing workers " << sum_pss / kMiB << " MiB; one private worker "
                           << alone.pss / kMiB << " MiB; bound " << bound / kMiB << " MiB");
  CHECK(sum_pss <= bound);

  // The same job on a sharing worker (not the one that wrote the file) gives the same bytes.
  ws[1]->send(job_line(1, audio, (dir.path() / "shared").string(), "align", transcript));
  REQUIRE(ws[1]->read_result()["ok"] == true);
  for (const char* ext : {".json", ".TextGrid", ".ctm"}) {
    CAPTURE(ext);
    const std::string a = file_bytes((dir.path() / "private").string() + ext);
    CHECK(!a.empty());
    CHECK(a == file_bytes((dir.path() / "shared").string() + ext));
  }
}

TEST_CASE("worker process: a shared weights file of another model is refused; the worker keeps its own copy") {
  test::TempDir dir;
  const std::string big = (dir.path() / "big.pt").string();
  REQUIRE(std::system((std::string(AB_MAKE_TONE_MODEL_BIN) + " --ballast-mib 1 " + big + " >/dev/null").c_str()) == 0);
  ShmPath shm;
  auto writer = start_worker(dir, big, {"--shared-weights", shm.path});
  WorkerProcess other({"--model", tone_model(), "--shared-weights", shm.path}, (dir.path() / "w.log").string());
  const json ready = json::parse(other.read_line().value_or("null"));
  REQUIRE(ready["ready"] == true);
  CHECK_FALSE(ready.contains("shared_weights_bytes"));
  CHECK(ready["shared_weights_error"].get<std::string>().find("other tensors than this model's") != std::string::npos);
  const std::string audio = write_utterance(dir, test::audio_formats().front(), 16000, 1);
  other.send(job_line(1, audio, (dir.path() / "tr").string(), "transcribe"));
  const json t = other.read_result();
  REQUIRE(t["ok"] == true);
  CHECK(t["text"] == kUtteranceText);
}

}  // namespace ab

namespace ab {

TEST_CASE("worker process: the tensor cache reuses a file's blocks across windows; outputs byte-identical with it off") {
  test::TempDir dir;
  // The utterance 48 times (100 s): four 30 s windows, the middle two of one size (34 s with both
  // contexts). The tone model's largest tensor in a window, frames x 32 floats, is 200 KiB or so,
  // above the 128 KiB the cache starts at; the third window can reuse the second's.
  std::vector<test::Tone> tones;
  std::string text;
  for (int i = 0; i < 48; ++i) {
    for (const test::Tone& t : utterance_tones()) tones.push_back(t);
    text += std::string(kUtteranceText) + "\n";
  }
  const std::string audio = (dir.path() / "long.wav").string();
  const std::string err = test::write_tones(audio, test::audio_formats().front(), 16000, 1, tones);
  REQUIRE_MESSAGE(err.empty(), err);
  const auto transcript = dir.write("long.txt", text).string();
  std::map<std::string, json> results;
  for (const char* mode : {"on", "off"}) {
    auto w = start_worker(dir, tone_model(), {"--tensor-cache", mode});
    for (const char* task : {"align", "transcribe"}) {
      const std::string out = (dir.path() / (std::string(task) + "-" + mode)).string();
      w->send(job_line(1, audio, out, task, task == std::string("align") ? transcript : ""));
      const json r = w->read_result();
      REQUIRE_MESSAGE(r["ok"] == true, r.dump());
      CHECK(r["windows"] == 4);
      results[std::string(task) + "-" + mode] = r;
    }
  }
  for (const char* task : {"align", "transcribe"}) {
    CAPTURE(task);
    const json on = results[std::string(task) + "-on"], off = results[std::string(task) + "-off"];
    REQUIRE_MESSAGE(on.contains("tensor_cache"), on.dump());
    MESSAGE("tensor cache: " << on["tensor_cache"].dump());
    CHECK(on["tensor_cache"]["mapped"].get<int>() > 0);
    CHECK(on["tensor_cache"]["reused"].get<int>() > 0);
    CHECK(on["tensor_cache"]["peak_bytes"].get<std::uint64_t>() >= 128u << 10);
    CHECK_FALSE(off.contains("tensor_cache"));
    for (const char* ext : {".json", ".TextGrid", ".ctm"}) {
      CAPTURE(ext);
      const std::string a = file_bytes((dir.path() / (std::string(task) + "-on")).string() + ext);
      CHECK(!a.empty());
      CHECK(a == file_bytes((dir.path() / (std::string(task) + "-off")).string() + ext));
    }
    if (on.contains("log_prob")) CHECK(on["log_prob"] == off["log_prob"]);
    if (on.contains("text")) CHECK(on["text"] == off["text"]);
  }
}

}  // namespace ab
