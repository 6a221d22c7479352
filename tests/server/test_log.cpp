// Structured log events (lariv/server/log.hpp): the text payload quotes what could be misread,
// and the JSON formatter writes one valid JSON object per line, for events and for plain spdlog
// calls alike, whatever bytes the values hold.
#include <doctest/doctest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lariv/server/log.hpp"

namespace lg = lariv::server::log;

namespace {

/// The lines a JSON-formatted sink on the default logger receives while `body` runs.
template <class F>
std::vector<std::string> json_lines(F&& body, lg::fields context = lg::fields::object()) {
    // A sink that formats inside the call, as larivd's stderr sink does (a ring buffer formats
    // later, outside the event: it gets the text payload as "msg").
    std::ostringstream out;
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
    sink->set_formatter(lg::json_formatter(std::move(context)));
    auto logger = std::make_shared<spdlog::logger>("test-log", sink);
    logger->set_level(spdlog::level::info);
    const auto before = spdlog::default_logger();
    spdlog::set_default_logger(logger);  // no server thread runs between test cases
    body();
    spdlog::set_default_logger(before);
    std::vector<std::string> lines;
    std::istringstream in(out.str());
    for (std::string l; std::getline(in, l);) {
        lines.push_back(l + "\n");
    }
    return lines;
}

}  // namespace

TEST_CASE("log: the text payload quotes values that could be misread") {
    CHECK(lg::render_text("session closed", {{"session", "00ab"}, {"reason", "kicked"}, {"n", 3}}) ==
          "session closed session=00ab reason=kicked n=3");
    CHECK(lg::render_text("m", {{"name", "a b"}}) == R"(m name="a b")");
    CHECK(lg::render_text("m", {{"name", "x\"y\\z"}}) == R"(m name="x\"y\\z")");
    CHECK(lg::render_text("m", {{"name", "line\nforged=1"}}) == R"(m name="line\nforged=1")");
    CHECK(lg::render_text("m", {{"name", ""}}) == R"(m name="")");
    CHECK(lg::render_text("m", {{"ok", true}, {"off", nullptr}}) == "m ok=true off=null");
    // Invalid UTF-8 is replaced, never thrown on.
    CHECK_NOTHROW((void)lg::render_text("m", {{"name", std::string("\xff\xfe")}}));
    CHECK(lg::render_text("m", {{"name", std::string("a\xff")}}) == "m name=\"a\xef\xbf\xbd\"");
}

TEST_CASE("log: JSON lines are valid JSON with the event's values, for hostile bytes too") {
    const std::string hostile = std::string("q\"b\\s\x01\x1b[31m\n\xc3", 13);  // ends in a cut UTF-8 sequence
    const auto lines = json_lines(
        [&] {
            lg::event(spdlog::level::warn, "session closed",
                      {{"session", "00ab"}, {"remote", "127.0.0.1:5"}, {"name", hostile}, {"msgs_in", 7}});
            spdlog::warn("a plain call with \"quotes\", \\ and \x01 and \xff");
            lg::event(spdlog::level::warn, "reserved keys", {{"msg", "m"}, {"ts", 1}, {"node", 9}});
            lg::event(spdlog::level::debug, "below the level", [] {
                FAIL("the fields of a disabled event are never built");
                return lg::fields::object();
            });
        },
        {{"node", 1}});
    REQUIRE(lines.size() == 3);
    std::vector<nlohmann::json> j;
    for (const auto& l : lines) {
        CAPTURE(l);
        REQUIRE(!l.empty());
        CHECK(l.back() == '\n');
        CHECK(l.find('\n') == l.size() - 1);  // one object, one line
        j.push_back(nlohmann::json::parse(l));
        CHECK(j.back().is_object());
        CHECK(j.back()["ts"].is_string());
        CHECK(j.back()["level"] == "warning");
        CHECK(j.back()["node"].is_number());
    }
    CHECK(j[0]["msg"] == "session closed");
    CHECK(j[0]["session"] == "00ab");
    CHECK(j[0]["remote"] == "127.0.0.1:5");
    CHECK(j[0]["name"] == std::string("q\"b\\s\x01\x1b[31m\n\xef\xbf\xbd"));
    CHECK(j[0]["msgs_in"] == 7);
    CHECK(j[0]["node"] == 1);
    CHECK(j[1]["msg"] == "a plain call with \"quotes\", \\ and \x01 and \xef\xbf\xbd");
    CHECK(j[2]["msg"] == "reserved keys");
    CHECK(j[2]["field.msg"] == "m");
    CHECK(j[2]["field.ts"] == 1);
    CHECK(j[2]["node"] == 9);  // the event's own value, not the context's
    // "2024-05-01T12:00:00.123+02:00"
    const std::string ts = j[0]["ts"];
    CHECK(ts.size() == 29);
    CHECK(ts[10] == 'T');
    CHECK(ts[19] == '.');
}
