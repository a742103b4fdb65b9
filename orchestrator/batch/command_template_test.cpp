// Tests of the external-command template: placeholders, hostile file names, bad templates.
#include "orchestrator/batch/command_template.h"

#include <doctest/doctest.h>

using ab::CommandPlaceholders;
using ab::CommandTemplate;

namespace {
CommandPlaceholders values_for(const std::string& dir, const std::string& name, const std::string& out) {
  std::filesystem::path in = std::filesystem::path(dir) / name;
  return {in, out, std::filesystem::path(name).stem().string(), dir};
}
}  // namespace

TEST_CASE("placeholders expand inside and across arguments") {
  auto t = CommandTemplate::parse({"tool", "--in={in}", "{out}.TextGrid", "{dir}/{stem}.txt", "{{x}}"});
  REQUIRE(t.ok());
  auto argv = t->expand(values_for("/c/d", "a.wav", "/o/d/a"));
  REQUIRE(argv.size() == 5);
  CHECK(argv[0] == "tool");
  CHECK(argv[1] == "--in=/c/d/a.wav");
  CHECK(argv[2] == "/o/d/a.TextGrid");
  CHECK(argv[3] == "/c/d/a.txt");
  CHECK(argv[4] == "{x}");
}

TEST_CASE("without {in} the input is appended, as GNU parallel does") {
  auto t = CommandTemplate::parse({"wc", "-c"});
  REQUIRE(t.ok());
  auto argv = t->expand(values_for("/c", "a.wav", "/o/a"));
  REQUIRE(argv.size() == 3);
  CHECK(argv[2] == "/c/a.wav");
}

TEST_CASE("hostile file names stay one argument each, byte for byte") {
  auto t = CommandTemplate::parse({"tool", "{in}", "{stem}"});
  REQUIRE(t.ok());
  for (std::string name : {"a b.wav", "it's \"q\".wav", "x;rm -rf ~.wav", "$(reboot).wav", "new\nline.wav",
                           "-rf.wav", "`id`.wav"}) {
    auto argv = t->expand(values_for("/c", name, "/o/x"));
    REQUIRE(argv.size() == 3);
    CHECK(argv[1] == "/c/" + name);
    CHECK(argv[2] == std::filesystem::path(name).stem().string());
  }
}

TEST_CASE("a relative path with a leading dash is made safe") {
  CHECK(ab::safe_path_argument("-x.wav") == "./-x.wav");
  CHECK(ab::safe_path_argument("/a/-x.wav") == "/a/-x.wav");
  CHECK(ab::safe_path_argument("a/-x.wav") == "a/-x.wav");
}

TEST_CASE("bad templates are refused with a message naming the argument") {
  auto none = CommandTemplate::parse({});
  CHECK_FALSE(none.ok());
  CHECK(none.error().find("no command") != std::string::npos);
  auto unknown = CommandTemplate::parse({"tool", "{input}"});
  CHECK_FALSE(unknown.ok());
  CHECK(unknown.error().find("{input}") != std::string::npos);
  CHECK(unknown.error().find("{in}, {out}") != std::string::npos);
  auto unclosed = CommandTemplate::parse({"tool", "{in"});
  CHECK_FALSE(unclosed.ok());
  CHECK(unclosed.error().find("without '}'") != std::string::npos);
  auto unopened = CommandTemplate::parse({"tool", "a}b"});
  CHECK_FALSE(unopened.ok());
  CHECK(unopened.error().find("without '{'") != std::string::npos);
}

TEST_CASE("text() joins the template for the history key") {
  auto t = CommandTemplate::parse({"tool", "{in}", "{out}"});
  REQUIRE(t.ok());
  CHECK(t->text() == "tool {in} {out}");
}
