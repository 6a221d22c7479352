#pragma once
/// \file
/// Stable error codes carried by `-ERR` and `ACK` replies.

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace lariv::protocol {

/// An error the server reports to a client (or the decoder reports to the server).
///
/// Names and numbers are stable: a code is never renumbered or renamed, only added in a new
/// protocol version. The wire carries the name (`-ERR unknown_session ...`); the number is
/// for logs, metrics and the JSON bodies.
enum class error_code : std::uint16_t {
    // 1xx: the request itself is wrong.
    bad_syntax = 100,           ///< malformed line, argument or payload terminator
    unknown_command = 101,      ///< verb not known on this side of the connection
    line_too_long = 102,        ///< control line longer than limits::max_line (fatal)
    frame_too_large = 103,      ///< declared payload or JSON longer than the limit (fatal)
    bad_json = 104,             ///< JSON not valid, too deep, too big or of the wrong shape
    handshake_required = 105,   ///< a command other than HELLO/PING/QUIT before HELLO
    unsupported_version = 106,  ///< HELLO asked for a protocol version the server lacks
    not_authorized = 107,       ///< bad auth token, or an admin command without admin rights
    // 2xx: the target of the request.
    unknown_session = 200,   ///< no live session has this id
    stale_session = 201,     ///< the id's slot is now held by a newer session
    queue_full = 202,        ///< the target session's outbound queue is full
    rate_limited = 203,      ///< the sender exceeded its rate; retry later
    node_unreachable = 204,  ///< the target's node is known but no link to it is up
    // 3xx: the server's state.
    draining = 300,       ///< the server is shutting down and takes no new work
    server_full = 301,    ///< max sessions reached (sent before close)
    slow_consumer = 302,  ///< this session did not read its queue in time (before close)
    timeout = 303,        ///< frame, handshake or heartbeat deadline passed (before close)
    internal = 304,       ///< a server bug; the request may be retried
};

/// Every error code, in numeric order.
[[nodiscard]] std::span<const error_code> all_error_codes() noexcept;

/// The stable wire name, e.g. "unknown_session".
[[nodiscard]] std::string_view to_string(error_code code) noexcept;

/// Parses a wire name (case-insensitive); nullopt when unknown.
[[nodiscard]] std::optional<error_code> parse_error_code(std::string_view name) noexcept;

/// The stable number of a code.
[[nodiscard]] constexpr std::uint16_t to_number(error_code code) noexcept {
    return static_cast<std::uint16_t>(code);
}

/// True when the connection cannot continue after this error (the server closes it after the
/// `-ERR` reply): the byte stream is out of step, or the server is dropping the session.
[[nodiscard]] constexpr bool is_fatal(error_code code) noexcept {
    switch (code) {
        case error_code::line_too_long:
        case error_code::frame_too_large:
        case error_code::server_full:
        case error_code::slow_consumer:
        case error_code::timeout:
            return true;
        default:
            return false;
    }
}

}  // namespace lariv::protocol
