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
  std::string error;
  auto t = CommandTemplate::parse({"tool", "--in={in}", "{out}.TextGrid", "{dir}/{stem}.txt", "{{x}}"}, error);
  REQUIRE(t.has_value());
  auto argv = t->expand(values_for("/c/d", "a.wav", "/o/d/a"));
  REQUIRE(argv.size() == 5);
  CHECK(argv[0] == "tool");
  CHECK(argv[1] == "--in=/c/d/a.wav");
  CHECK(argv[2] == "/o/d/a.TextGrid");
  CHECK(argv[3] == "/c/d/a.txt");
  CHECK(argv[4] == "{x}");
}

TEST_CASE("without {in} the input is appended, as GNU parallel does") {
  std::string error;
  auto t = CommandTemplate::parse({"wc", "-c"}, error);
  REQUIRE(t.has_value());
  auto argv = t->expand(values_for("/c", "a.wav", "/o/a"));
  REQUIRE(argv.size() == 3);
  CHECK(argv[2] == "/c/a.wav");
}

TEST_CASE("hostile file names stay one argument each, byte for byte") {
  std::string error;
  auto t = CommandTemplate::parse({"tool", "{in}", "{stem}"}, error);
  REQUIRE(t.has_value());
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
  std::string error;
  CHECK_FALSE(CommandTemplate::parse({}, error).has_value());
  CHECK(error.find("no command") != std::string::npos);
  CHECK_FALSE(CommandTemplate::parse({"tool", "{input}"}, error).has_value());
  CHECK(error.find("{input}") != std::string::npos);
  CHECK(error.find("{in}, {out}") != std::string::npos);
  CHECK_FALSE(CommandTemplate::parse({"tool", "{in"}, error).has_value());
  CHECK(error.find("without '}'") != std::string::npos);
  CHECK_FALSE(CommandTemplate::parse({"tool", "a}b"}, error).has_value());
}

TEST_CASE("text() joins the template for the history key") {
  std::string error;
  auto t = CommandTemplate::parse({"tool", "{in}", "{out}"}, error);
  REQUIRE(t.has_value());
  CHECK(t->text() == "tool {in} {out}");
}
