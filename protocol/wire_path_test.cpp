// common/wire_path.h: byte-exact paths through JSON, escaped display (tested with its main user).
#include "protocol/wire_path.h"

#include <doctest/doctest.h>

TEST_CASE("wire_path: UTF-8 paths stay strings, others travel as hex and come back byte-exact") {
  for (const std::string& path : {std::string("/c/a.wav"), std::string("/c/\xc3\xa9t\xc3\xa9.wav"), std::string("/c/caf\xe9.wav"),
                                 std::string("/c/\xff\xfe\x80.wav"), std::string("/c/\xed\xa0\x80.wav") /* surrogate */,
                                 std::string("/c/\xc0\xaf.wav") /* overlong '/' */, std::string("/c/new\nline.wav")}) {
    CAPTURE(ab::display_path(path));
    const nlohmann::json j = ab::path_to_json(path);
    CHECK(j.is_string() == ab::is_valid_utf8(path));
    const std::string line = j.dump();  // never throws: either form is valid JSON text
    const auto back = ab::path_from_json(nlohmann::json::parse(line));
    REQUIRE(back.has_value());
    CHECK(*back == path);
    CHECK(ab::is_valid_utf8(ab::display_path(path)));
  }
  CHECK(ab::path_to_json("/c/caf\xe9.wav") == nlohmann::json{{"hex", "2f632f636166e92e776176"}});
  CHECK(ab::display_path("/c/caf\xe9.wav") == "/c/caf\\xe9.wav");
  CHECK(ab::display_path("/c/\xc3\xa9.wav") == "/c/\xc3\xa9.wav");
  CHECK_FALSE(ab::path_from_json(nlohmann::json{{"hex", "2f6"}}).has_value());
  CHECK_FALSE(ab::path_from_json(nlohmann::json{{"hex", "zz"}}).has_value());
  CHECK_FALSE(ab::path_from_json(nlohmann::json(3)).has_value());
}
