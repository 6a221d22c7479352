// lariv/server/log.hpp — the one home of the registry's and larivd's log lines: structured events
// (a message and named values) on spdlog's default logger, and the two line formats larivd sets
// on its sinks (server/DESIGN.md, "Logging").
//
//   log::event(spdlog::level::info, "session closed",
//              {{"session", id}, {"remote", r}, {"reason", why}});
//
// An event's payload, the text every spdlog sink receives, is "msg key=value ...": a value with
// a blank, a quote, '=', a backslash, a control byte or a non-ASCII byte is written as a quoted
// JSON string, so one event is always one line and a hostile value cannot forge another. The
// JSON formatter (json_formatter()) sees the event's values themselves and writes one JSON object
// per line: {"ts":..,"level":..,"msg":..,<the values>,<the context>}. Plain spdlog calls (a
// library's, a host's) become {"ts","level","msg":<payload>} lines, encoded the same way. Every
// string goes through nlohmann_json's encoder with invalid UTF-8 replaced (U+FFFD), so bytes from
// the network can neither break a line nor throw. The formatter finds an event's values while
// the event is being logged, so a sink that formats later (async loggers, the ring buffer sink)
// writes the text payload as "msg".
//
// Cost: event() checks the level first and builds nothing when it is off; for values that cost
// something to compute, pass a callable that returns the fields (it runs only when enabled).
//
// Needs spdlog (a dependency of the lariv package, as the registry logs through it).
#pragma once

#include <concepts>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>
#include <spdlog/common.h>
#include <spdlog/formatter.h>

namespace lariv::server::log {

/// An event's values, in the order given (an object; a nested value is written as compact JSON).
using fields = nlohmann::ordered_json;

/// Whether spdlog's default logger writes `lvl`.
[[nodiscard]] bool enabled(spdlog::level::level_enum lvl);

/// Logs `msg` with `f` (a JSON object) on the default logger, if `lvl` is enabled.
void event(spdlog::level::level_enum lvl, std::string_view msg, const fields& f = fields::object());

/// As event(), with the fields made by `make()` only when `lvl` is enabled (hot paths).
template <class F>
    requires std::invocable<F&> && std::convertible_to<std::invoke_result_t<F&>, fields>
void event(spdlog::level::level_enum lvl, std::string_view msg, F&& make) {
    if (enabled(lvl)) {
        event(lvl, msg, fields(make()));
    }
}

/// The text payload of an event: "msg key=value key2="a b"".
[[nodiscard]] std::string render_text(std::string_view msg, const fields& f);

/// A JSON string literal of `s` (quotes, escapes, invalid UTF-8 replaced by U+FFFD).
[[nodiscard]] std::string quote(std::string_view s);

/// The formatter for JSON lines: one object per line, "ts" (local time, ISO 8601 with
/// milliseconds and the UTC offset), "level" (spdlog's names: trace, debug, info, warning, error,
/// critical), "msg", the event's values, then `context` (e.g. {"node": 1}: on every line). A
/// value named ts, level or msg is written as "field.<name>" so that no key repeats.
[[nodiscard]] std::unique_ptr<spdlog::formatter> json_formatter(fields context = fields::object());

/// The formatter for text lines: "2024-05-01 12:00:00.123 info msg key=value ...".
[[nodiscard]] std::unique_ptr<spdlog::formatter> text_formatter();

/// larivd: makes the default logger write to stderr in `format` ("text" or "json") at `level`
/// (a config word: trace, debug, info, warn, error, critical, off).
void setup_default_logger(std::string_view format, std::string_view level, fields context = fields::object());

}  // namespace lariv::server::log
