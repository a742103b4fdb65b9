// Black-box tests of hostile names and trees: non-UTF-8 names, names at NAME_MAX, symlinked
// directories and their loops, and --out inside the corpus.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <set>
#include <sstream>

#include "history/job_key.h"
#include "tests/cli/cli_process.h"
#include "tests/testutil/temp_dir.h"

namespace fs = std::filesystem;
using ab::cli::Process;

namespace {

struct Tones {
  ab::test::TempDir t{"ab-cli-hostile"};
  fs::path model = t.path() / "tone.pt";
  Tones() { REQUIRE(ab::cli::run({AB_MAKE_TONE_MODEL_BIN, model.string()}, t.path()).exit_code == 0); }
  /// An aligned file: tones a b, transcript "ab".
  void add(const fs::path& audio) const {
    REQUIRE(ab::cli::synth(audio, {"1000:0.3", "1300:0.3"}, t.path()));
    fs::path txt = audio;
    txt.replace_extension(".txt");
    t.write(txt.lexically_relative(t.path()).string(), "ab\n");
  }
  ab::cli::Result run(const fs::path& corpus, const fs::path& out, std::vector<std::string> extra = {}) const {
    std::vector<std::string> argv = {AB_BIN, "--model", model.string(), "--out", out.string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(corpus.string());
    return ab::cli::run(argv, t.path());
  }
};

/// For doctest::skip: true, printing why to stderr once, where a second user cannot be played
/// (not root, or no setpriv to become `nobody`).
bool second_user_unavailable() {
  static const bool unavailable = [] {
    std::string why;
    if (::geteuid() != 0) why = "not root, so no second user can be played";
    else if (::access("/usr/bin/setpriv", X_OK) != 0) why = "/usr/bin/setpriv (util-linux) is missing";
    if (why.empty()) return false;
    std::fprintf(stderr, "SKIPPING the test with a second local user (nobody): %s\n", why.c_str());
    return true;
  }();
  return unavailable;
}

/// Runs `script` with /bin/sh as the user nobody (uid and gid 65534, no supplementary groups).
ab::cli::Result as_nobody(const std::string& script, const fs::path& dir) {
  return ab::cli::run({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c", script}, dir);
}

}  // namespace

TEST_CASE("hostile names: a Latin-1 name is aligned byte-exact and shown escaped; a 250-byte name fits its temporaries") {
  Tones k;
  const std::string latin1 = "caf\xe9";         // "café" in Latin-1: not UTF-8
  const std::string long_stem(246, 'n');       // 246 + ".wav" = 250 bytes; + ".TextGrid" = 255 = NAME_MAX
  k.add(k.t.path() / "c" / (latin1 + ".wav"));
  k.add(k.t.path() / "c" / (long_stem + ".wav"));
  k.add(k.t.path() / "c/plain.wav");
  const fs::path out = k.t.path() / "out";
  ab::cli::Result r = k.run(k.t.path() / "c", out, {"--progress", "plain"});
  CAPTURE(r.out);
  CAPTURE(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("3 done") != std::string::npos);
  for (const char* ext : {".TextGrid", ".json", ".ctm"}) {
    CHECK(fs::is_regular_file(out / (latin1 + ext)));
    CHECK(fs::is_regular_file(out / (long_stem + ext)));
  }
  CHECK(r.err.find("done   caf\\xe9.wav") != std::string::npos);  // shown escaped
  CHECK(r.err.find(latin1) == std::string::npos);                   // never the raw bytes
  // Every JSON event parses (names escaped), and resume finds the files done.
  ab::cli::Result again = k.run(k.t.path() / "c", out, {"--progress", "json"});
  CHECK(again.exit_code == 0);
  std::istringstream lines(again.out);
  std::string line;
  nlohmann::json last;
  while (std::getline(lines, line)) last = nlohmann::json::parse(line);
  CHECK(last["event"] == "summary");
  CHECK(last["skipped"] == 3);
  // The dry run shows the name escaped too.
  ab::cli::Result plan = k.run(k.t.path() / "c", out, {"--dry-run", "--force"});
  CHECK(plan.out.find("/caf\\xe9.wav\t") != std::string::npos);
}

TEST_CASE("hostile names: the worker's own errors show a Latin-1 name as \\xHH, as the parent does, never as U+FFFD") {
  Tones k;
  const std::string latin1 = "caf\xe9";
  k.t.write("c/" + latin1 + "-empty.wav", "");  // the worker's AudioSource: "empty file (0 bytes)"
  k.add(k.t.path() / "c" / (latin1 + "-text.wav"));
  k.t.write("c/" + latin1 + "-text.txt", "a\xff" "b\n");  // read_transcript: "not valid UTF-8 at byte offset 1"
  const fs::path out = k.t.path() / "out";
  ab::cli::Result r = k.run(k.t.path() / "c", out, {"--progress", "plain"});
  CAPTURE(r.out);
  CAPTURE(r.err);
  CHECK(r.exit_code == 1);
  const std::string dir = (k.t.path() / "c").string();
  // Each failure names its file once (the summary strips the worker's own "PATH: " prefix, which
  // it can only do when both spell the path alike) and says the worker's reason.
  CHECK(r.out.find("  " + dir + "/caf\\xe9-empty.wav: empty file (0 bytes)") != std::string::npos);
  CHECK(r.out.find("  " + dir + "/caf\\xe9-text.wav: " + dir + "/caf\\xe9-text.txt: not valid UTF-8 at byte offset 1") !=
        std::string::npos);
  const std::string replacement = "\xef\xbf\xbd";  // U+FFFD, what dumping invalid UTF-8 with 'replace' gives
  CHECK(r.out.find(replacement) == std::string::npos);
  CHECK(r.err.find(replacement) == std::string::npos);
  CHECK(r.out.find(latin1) == std::string::npos);
  // JSON events carry the same text: the end event's detail as the worker said it, the summary's
  // reason without the path it is filed under.
  ab::cli::Result j = k.run(k.t.path() / "c", out, {"--progress", "json"});
  CHECK(j.out.find(replacement) == std::string::npos);
  nlohmann::json summary;
  std::istringstream events(j.out);
  for (std::string line; std::getline(events, line);)
    if (auto e = nlohmann::json::parse(line); e["event"] == "summary") summary = e;
  REQUIRE(summary["failed"].size() == 2);
  bool found = false;
  for (const auto& f : summary["failed"])
    if (f["path"] == dir + "/caf\\xe9-empty.wav") found = f["reason"].get<std::string>().rfind("empty file (0 bytes)", 0) == 0;
  CHECK(found);
}

TEST_CASE("hostile trees: symlinked directories are followed, a loop is reported once; --out inside the corpus is never scanned") {
  Tones k;
  k.add(k.t.path() / "c/a.wav");
  k.add(k.t.path() / "elsewhere/spk/b.wav");
  fs::create_directory_symlink(k.t.path() / "elsewhere", k.t.path() / "c/linked");
  fs::create_directory_symlink(k.t.path() / "c", k.t.path() / "c/loop");  // c/loop/loop/... forever
  fs::create_symlink(k.t.path() / "nowhere", k.t.path() / "c/dangling");
  const fs::path out = k.t.path() / "c/aligned";  // inside the corpus
  ab::cli::Result r = k.run(k.t.path() / "c", out, {"--progress", "plain"});
  CAPTURE(r.out);
  CAPTURE(r.err);
  CHECK(r.out.find("2 done") != std::string::npos);
  CHECK(fs::is_regular_file(out / "linked/spk/b.TextGrid"));
  CHECK(r.out.find((k.t.path() / "c/loop").string() + ": is a symlink loop") != std::string::npos);
  CHECK(r.out.find((k.t.path() / "c/dangling").string() + ": is a symlink whose target is missing") != std::string::npos);
  CHECK(r.exit_code == 1);  // the loop and the dangling link are reported as problems
  // The second run scans the same two files: its own outputs are not inputs (no aligned/aligned).
  ab::cli::Result again = k.run(k.t.path() / "c", out, {"--progress", "plain"});
  CHECK(again.out.find("0 done, 2 skipped") != std::string::npos);
  CHECK_FALSE(fs::exists(out / "aligned"));
}

TEST_CASE("hostile trees: a command whose outputs are audio, --out inside the corpus: outputs never become inputs") {
  ab::test::TempDir t{"ab-cli-hostile-out"};
  t.write("c/a.wav", "aaaa");
  t.write("c/spk/b.wav", "bbbb");
  const fs::path out = t.path() / "c/converted";
  auto run = [&] {
    return ab::cli::run({AB_BIN, "--progress", "plain", "--out", out.string(), (t.path() / "c").string(), "--", "/bin/cp",
                         "{in}", "{out}.wav"},
                        t.path());
  };
  ab::cli::Result first = run();
  CHECK(first.exit_code == 0);
  CHECK(first.out.find("2 done") != std::string::npos);
  for (int i = 0; i < 2; ++i) {
    ab::cli::Result again = run();  // before: 2 -> 4 -> 6 files, converted/converted/...
    CAPTURE(again.out);
    CHECK(again.exit_code == 0);
    CHECK(again.out.find("0 done, 2 skipped") != std::string::npos);
  }
  CHECK_FALSE(fs::exists(out / "converted"));
}

TEST_CASE("a SIGKILL from someone else is reported as such, not as the kernel's OOM kill; the file is retried and done") {
  ab::test::TempDir t{"ab-cli-hostile-kill"};
  t.write("c/victim.wav", "x");
  const fs::path mark = t.path() / "first";
  // The first attempt writes its pid and waits to be killed; the second finishes at once.
  Process p({AB_BIN, "--progress", "plain", "--out", (t.path() / "out").string(), (t.path() / "c").string(), "--", "/bin/sh",
             "-c", "if [ ! -e \"$1\" ]; then echo $$ > \"$1\"; exec sleep 30; fi; touch \"$2.done\"", "sh", mark.string(),
             "{out}"},
            t.path());
  REQUIRE(ab::cli::eventually([&] { return ab::cli::slurp(mark).find('\n') != std::string::npos; }));
  const pid_t victim = static_cast<pid_t>(std::stol(ab::cli::slurp(mark)));
  REQUIRE(::kill(victim, SIGKILL) == 0);  // a user's kill -9, no memory pressure anywhere
  ab::cli::Result r = p.wait();
  CAPTURE(r.out);
  CAPTURE(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("1 done") != std::string::npos);
  CHECK(r.out.find("1 retried") != std::string::npos);
  CHECK(r.err.find("killed by signal 9") != std::string::npos);
  CHECK(r.err.find("not by align-batch, and no out-of-memory kill was recorded") != std::string::npos);
  CHECK(r.err.find("killed by the kernel (out of memory)") == std::string::npos);
  CHECK(r.out.find("killed by the kernel (OOM)") == std::string::npos);
}

TEST_CASE("another local user (nobody) pre-creates the run's status and weights names and tries to read its blocks: "
          "align-batch is not fooled and loses nothing" *
          doctest::skip(second_user_unavailable())) {
  Tones k;
  for (const char* name : {"a", "b"}) {
    std::vector<std::string> pieces;  // 10 s each, so the workers' blocks live a while
    for (int i = 0; i < 10; ++i) pieces.push_back(i % 2 ? "1300:1" : "1000:1");
    REQUIRE(ab::cli::synth(k.t.path() / "c" / (std::string(name) + ".wav"), pieces, k.t.path()));
    k.t.write(std::string("c/") + name + ".txt", "ababababab\n");
  }
  const fs::path precious = k.t.write("precious.txt", "the victim's own file\n");
  auto key = ab::job_key_for_model(k.model);
  REQUIRE(key.ok());
  // align-batch is forked, then held before exec until nobody has laid the traps for its pid.
  int gate[2];
  REQUIRE(::pipe(gate) == 0);
  const fs::path out = k.t.path() / "out";
  ab::cli::Process p({AB_BIN, "--model", k.model.string(), "--progress", "plain", "--out", out.string(),
                      (k.t.path() / "c").string()},
                     k.t.path(), [&] {
                       ::close(gate[1]);
                       char c;
                       if (::read(gate[0], &c, 1) != 1) ::_exit(125);
                       ::close(gate[0]);
                     });
  ::close(gate[0]);
  const std::string pid = std::to_string(p.pid());
  char hash[32];
  std::snprintf(hash, sizeof hash, "%016zx", std::hash<std::string>{}(key.value()));
  const std::string weights = "/dev/shm/ab-weights-" + pid + "-" + hash;
  // The names an attacker could predict before the names were random: the status blocks'
  // ab-status-PID-0..15 and the weights file's (pid and key hash), here as a link to a file of the
  // victim's, which a worker following it would truncate and overwrite with tensors.
  std::string traps = "set -e; for i in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do f=/dev/shm/ab-status-" + pid +
                      "-$i; printf forged > $f; chmod 666 $f; done; ln -s " + precious.string() + " " + weights;
  const ab::cli::Result laid = as_nobody(traps, "/");
  REQUIRE_MESSAGE(laid.exit_code == 0, laid.err);
  REQUIRE(::write(gate[1], "x", 1) == 1);
  ::close(gate[1]);

  // While it runs, nobody tries to read each block align-batch made (they name the victim's files).
  std::set<std::string> tried;
  std::size_t readable = 0;
  auto own_blocks = [&] {
    std::vector<std::string> names;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/dev/shm", ec)) {
      const std::string name = e.path().filename().string();
      struct stat st {};
      if (name.rfind("ab-status-" + pid + "-", 0) == 0 && ::lstat(e.path().c_str(), &st) == 0 && st.st_uid == 0)
        names.push_back(name);
    }
    return names;
  };
  CHECK(ab::cli::eventually([&] {
    for (const auto& name : own_blocks())
      if (tried.insert(name).second && as_nobody("cat /dev/shm/" + name + " > /dev/null", "/").exit_code == 0) ++readable;
    return !tried.empty();
  }));
  ab::cli::Result r = p.wait();
  CAPTURE(r.out);
  CAPTURE(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("2 done, 0 skipped (already done), 0 failed") != std::string::npos);
  for (const char* f : {"a.TextGrid", "a.json", "a.ctm", "b.TextGrid", "b.json", "b.ctm"}) CHECK(fs::is_regular_file(out / f));
  CHECK(readable == 0);                                                // no block was readable by nobody
  CHECK(ab::cli::slurp(precious) == "the victim's own file\n");       // the link was not followed
  // nobody's objects are left as they were: never removed, reused or written.
  for (int i = 0; i < 16; ++i) {
    const std::string f = "/dev/shm/ab-status-" + pid + "-" + std::to_string(i);
    struct stat st {};
    CHECK_MESSAGE((::lstat(f.c_str(), &st) == 0 && st.st_uid == 65534), f);
    CHECK(ab::cli::slurp(f) == "forged");
  }
  CHECK(fs::is_symlink(weights));  // nobody's link too: not followed, not removed
  // The parent made its own weights file under a name nobody could guess, so the workers still
  // share one copy instead of each keeping a private one.
  std::string logs;
  for (const auto& e : fs::directory_iterator(out / ".align-batch" / "logs"))
    if (e.path().filename().string().rfind("worker-", 0) == 0) logs += ab::cli::slurp(e.path());
  CAPTURE(logs);
  CHECK(logs.find("weights written to /dev/shm/ab-weights-" + pid + "-") != std::string::npos);
  CHECK(logs.find("weights not shared") == std::string::npos);
  CHECK(own_blocks().empty());  // and align-batch's own blocks are gone
  CHECK(as_nobody("rm -f /dev/shm/ab-status-" + pid + "-* " + weights, "/").exit_code == 0);
}
