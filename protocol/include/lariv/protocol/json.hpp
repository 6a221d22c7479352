#pragma once
/// \file
/// JSON bodies of the structured replies, and bounded JSON parsing for anything from a peer.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "lariv/protocol/limits.hpp"
#include "lariv/protocol/session_id.hpp"

namespace lariv::protocol {

/// Body of `+HELLO`: what a client learns from the handshake.
struct hello_reply {
    std::uint32_t version = protocol_version;  ///< protocol version the server will speak
    session_id session;                        ///< the client's own session id
    std::uint32_t node = 0;                    ///< the server's node id
    std::string server;                        ///< server name and version, e.g. "larivd/0.1.0"
    protocol::limits limits;                   ///< the server's limits for this connection
    std::uint32_t heartbeat_ms = 0;            ///< server PING interval; 0 when none
    friend bool operator==(const hello_reply&, const hello_reply&) = default;
};

/// Body of `+INFO`, and one entry of `+LIST`.
struct session_info {
    session_id id;                   ///< the session
    std::string name;                ///< client name from HELLO ("" when none)
    std::uint64_t age_ms = 0;        ///< time since the handshake
    std::uint64_t queued_bytes = 0;  ///< bytes waiting in its outbound queue
    std::uint64_t msgs_in = 0;       ///< SENDs accepted from it
    std::uint64_t msgs_out = 0;      ///< MSGs delivered to it
    friend bool operator==(const session_info&, const session_info&) = default;
};

/// Body of `+LIST`: one page of sessions in id order.
struct list_page {
    std::vector<session_info> sessions;  ///< at most the requested limit
    std::optional<session_id> next;      ///< pass as `after=` for the next page; nullopt at the end
    friend bool operator==(const list_page&, const list_page&) = default;
};

/// Parses JSON from a peer with bounds: at most `lim.max_json` bytes and `lim.max_json_depth`
/// levels of nesting, checked before nlohmann builds anything. Returns nullopt when the text is
/// too big, too deep or not JSON. Never throws.
[[nodiscard]] std::optional<nlohmann::json> parse_json(std::string_view text, const limits& lim);

/// Parses a typed body (hello_reply, session_info, list_page) with parse_json()'s bounds.
/// Returns nullopt when the JSON is invalid or has the wrong shape. Never throws.
template <class T>
[[nodiscard]] std::optional<T> parse_body(std::string_view text, const limits& lim) {
    auto j = parse_json(text, lim);
    if (!j) {
        return std::nullopt;
    }
    try {
        return j->template get<T>();
    } catch (const nlohmann::json::exception&) {
        return std::nullopt;
    }
}

/// JSON mapping of session ids: a 32-hex-digit string.
void to_json(nlohmann::json& j, const session_id& id);
/// JSON mapping of session ids; throws nlohmann::json::type_error on a bad string.
void from_json(const nlohmann::json& j, session_id& id);
/// JSON mapping of limits.
void to_json(nlohmann::json& j, const limits& l);
/// JSON mapping of limits; missing fields keep their defaults.
void from_json(const nlohmann::json& j, limits& l);
/// JSON mapping of hello_reply.
void to_json(nlohmann::json& j, const hello_reply& r);
/// JSON mapping of hello_reply.
void from_json(const nlohmann::json& j, hello_reply& r);
/// JSON mapping of session_info.
void to_json(nlohmann::json& j, const session_info& s);
/// JSON mapping of session_info.
void from_json(const nlohmann::json& j, session_info& s);
/// JSON mapping of list_page.
void to_json(nlohmann::json& j, const list_page& p);
/// JSON mapping of list_page.
void from_json(const nlohmann::json& j, list_page& p);

}  // namespace lariv::protocol
