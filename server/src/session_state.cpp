#include "lariv/server/session_state.hpp"

namespace lariv::server {

std::string_view to_string(close_reason r) noexcept {
    switch (r) {
        case close_reason::client_quit:
            return "client_quit";
        case close_reason::client_closed:
            return "client_closed";
        case close_reason::io_error:
            return "io_error";
        case close_reason::protocol_error:
            return "protocol_error";
        case close_reason::handshake_timeout:
            return "handshake_timeout";
        case close_reason::heartbeat_timeout:
            return "heartbeat_timeout";
        case close_reason::idle_timeout:
            return "idle_timeout";
        case close_reason::frame_timeout:
            return "frame_timeout";
        case close_reason::slow_consumer:
            return "slow_consumer";
        case close_reason::kicked:
            return "kicked";
        case close_reason::server_full:
            return "server_full";
        case close_reason::draining:
            return "draining";
        case close_reason::host_error:
            return "host_error";
        case close_reason::shutdown:
            return "shutdown";
        case close_reason::count_:
            break;
    }
    return "unknown";
}

std::optional<protocol::error_code> error_for(close_reason r) noexcept {
    using protocol::error_code;
    switch (r) {
        case close_reason::handshake_timeout:
        case close_reason::heartbeat_timeout:
        case close_reason::idle_timeout:
        case close_reason::frame_timeout:
            return error_code::timeout;
        case close_reason::slow_consumer:
            return error_code::slow_consumer;
        case close_reason::kicked:
            return error_code::not_authorized;
        case close_reason::server_full:
            return error_code::server_full;
        case close_reason::draining:
        case close_reason::shutdown:
            return error_code::draining;
        case close_reason::host_error:
            return error_code::internal;
        default:
            return std::nullopt;  // the client left, or the stream is already broken
    }
}

std::string_view to_string(session_state s) noexcept {
    switch (s) {
        case session_state::accepted:
            return "accepted";
        case session_state::handshaking:
            return "handshaking";
        case session_state::live:
            return "live";
        case session_state::draining:
            return "draining";
        case session_state::closing:
            return "closing";
        case session_state::closed:
            return "closed";
    }
    return "unknown";
}

}  // namespace lariv::server
