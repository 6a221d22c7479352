#include "lariv/protocol/error.hpp"

#include <array>

#include "lariv/protocol/message.hpp"
#include "text.hpp"

namespace lariv::protocol {

namespace {

struct code_name {
    error_code code;
    std::string_view name;
};

constexpr std::array<code_name, 18> code_names{{
    {error_code::bad_syntax, "bad_syntax"},
    {error_code::unknown_command, "unknown_command"},
    {error_code::line_too_long, "line_too_long"},
    {error_code::frame_too_large, "frame_too_large"},
    {error_code::bad_json, "bad_json"},
    {error_code::handshake_required, "handshake_required"},
    {error_code::unsupported_version, "unsupported_version"},
    {error_code::not_authorized, "not_authorized"},
    {error_code::unknown_session, "unknown_session"},
    {error_code::stale_session, "stale_session"},
    {error_code::queue_full, "queue_full"},
    {error_code::rate_limited, "rate_limited"},
    {error_code::node_unreachable, "node_unreachable"},
    {error_code::draining, "draining"},
    {error_code::server_full, "server_full"},
    {error_code::slow_consumer, "slow_consumer"},
    {error_code::timeout, "timeout"},
    {error_code::internal, "internal"},
}};

constexpr std::array<error_code, code_names.size()> make_codes() {
    std::array<error_code, code_names.size()> a{};
    for (std::size_t i = 0; i < a.size(); ++i) {
        a[i] = code_names[i].code;
    }
    return a;
}

constexpr std::array<error_code, code_names.size()> all_codes = make_codes();

}  // namespace

std::span<const error_code> all_error_codes() noexcept {
    return all_codes;
}

std::string_view to_string(error_code code) noexcept {
    for (const auto& c : code_names) {
        if (c.code == code) {
            return c.name;
        }
    }
    return "internal";
}

std::optional<error_code> parse_error_code(std::string_view name) noexcept {
    for (const auto& c : code_names) {
        if (detail::iequals(name, c.name)) {
            return c.code;
        }
    }
    return std::nullopt;
}

std::string_view to_string(body_kind kind) noexcept {
    switch (kind) {
        case body_kind::hello:
            return "HELLO";
        case body_kind::info:
            return "INFO";
        case body_kind::list:
            return "LIST";
        case body_kind::stats:
            return "STATS";
    }
    return "STATS";
}

}  // namespace lariv::protocol
