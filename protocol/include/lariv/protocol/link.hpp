#pragma once
/// \file
/// The cluster link protocol (PROTOCOL.md section 11): frames between two registry nodes, their
/// encoders and the link decoder. Same framing, ids, tokens and limits as the client protocol;
/// different verbs, and every decode error is fatal.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

#include "lariv/protocol/decoder.hpp"
#include "lariv/protocol/encoder.hpp"
#include "lariv/protocol/error.hpp"
#include "lariv/protocol/limits.hpp"
#include "lariv/protocol/message.hpp"
#include "lariv/protocol/session_id.hpp"

namespace lariv::protocol {

/// The link protocol version this codec speaks (`LINK {"version":1,...}`).
inline constexpr std::uint32_t link_version = 1;

/// Longest cluster name in a `LINK` handshake, in bytes.
inline constexpr std::size_t max_cluster_name_size = 64;

/// Longest cluster token in a `LINK` handshake, in bytes.
inline constexpr std::size_t max_link_token_size = 256;

/// `LINK <n>` + JSON: the link handshake, sent by both ends. Not on the hot path: it owns its
/// strings. The decoder requires all five fields (unknown ones are ignored); `cluster` is at
/// most max_cluster_name_size bytes and `token` at most max_link_token_size.
struct link_hello {
    std::uint32_t version = link_version;  ///< link protocol version the sender speaks
    std::string cluster;                   ///< the cluster's name
    std::uint32_t node = 0;                ///< the sender's node id
    std::uint32_t epoch = 0;               ///< the sender's boot epoch
    std::string token;                     ///< the cluster's shared token ("" when none)
    friend bool operator==(const link_hello&, const link_hello&) = default;
};

/// `ROUTE <from> <to> <n> [<token>]` + payload: a SEND forwarded to the target's node.
struct route_msg {
    session_id from;           ///< the sender's session (on the sending node)
    session_id to;             ///< the target session (on the receiving node)
    std::string_view payload;  ///< opaque bytes, at most limits::max_payload
    std::string_view token;    ///< the SEND's ack token; empty when no RACK is wanted
    friend bool operator==(const route_msg&, const route_msg&) = default;
};

/// `RACK <from> <token> ok|<code>`: the owner's verdict on a tokened ROUTE, sent back so the
/// sender's node can answer `ACK <token> ...` to session `from`.
struct rack_msg {
    session_id from;                  ///< the ROUTE's `from`: the session to tell
    std::string_view token;           ///< the ROUTE's token
    std::optional<error_code> error;  ///< nullopt: queued for the target
    friend bool operator==(const rack_msg&, const rack_msg&) = default;
};

/// What a `REQ` asks the owning node to do.
enum class link_op : std::uint8_t {
    info,  ///< `INFO`: describe the target session (`RES ... ok` carries a session_info)
    kick,  ///< `KICK`: close the target session
};

/// `REQ <reqid> INFO|KICK <target>`: a request to the node that owns `target`.
struct request_msg {
    std::uint64_t id = 0;        ///< chosen by the requester; echoed by the RES
    link_op op = link_op::info;  ///< what to do
    session_id target;           ///< the session it is about
    friend bool operator==(const request_msg&, const request_msg&) = default;
};

/// `RES <reqid> ok <n>` + JSON, or `RES <reqid> <code>`: the answer to a REQ. The decoder checks
/// the JSON's size (limits::max_json), not its content; parse it with parse_body<T>().
struct response_msg {
    std::uint64_t id = 0;             ///< the REQ's id
    std::optional<error_code> error;  ///< nullopt: done, `json` holds the result
    std::string_view json;            ///< the result (may be empty); empty when `error` is set
    friend bool operator==(const response_msg&, const response_msg&) = default;
};

/// Anything one node sends another. `err_msg` is `-ERR <code> [message]`: a refusal sent just
/// before the sender closes the link.
using link_frame = std::variant<link_hello,
                                route_msg,
                                rack_msg,
                                request_msg,
                                response_msg,
                                ping_msg,
                                pong_msg,
                                err_msg>;

/// The upper-case wire word of a link_op, e.g. "KICK".
[[nodiscard]] std::string_view to_string(link_op op) noexcept;

/// Decodes what a peer node sends on a cluster link. Same contract as command_decoder (views
/// into the input or the decoder's buffer, valid until the next call; a ROUTE that arrived whole
/// is neither copied nor allocated for), except that **every** error is fatal: the peer is out
/// of step and the node closes the link. Thread-compatible: one decoder per link.
class link_decoder {
public:
    /// A decoder with the given limits.
    explicit link_decoder(const limits& lim = {});
    /// Decodes at most one frame from `in`.
    [[nodiscard]] decode_result<link_frame> decode(std::string_view in);
    /// Decodes at most one frame from `in` (byte overload).
    [[nodiscard]] decode_result<link_frame> decode(std::span<const std::byte> in) {
        return decode(std::string_view(reinterpret_cast<const char*>(in.data()), in.size()));
    }
    /// Bytes held internally (at most limits().max_buffered()).
    [[nodiscard]] std::size_t buffered() const noexcept { return reader_.buffered(); }
    /// Frees buffer memory while nothing is buffered.
    void shrink() noexcept { reader_.shrink(); }
    /// The limits in force.
    [[nodiscard]] const protocol::limits& limits() const noexcept { return limits_; }

private:
    enum class pending : std::uint8_t { hello, route, response };

    decode_result<link_frame> fail(error_code code, std::string_view why, std::size_t consumed);
    decode_result<link_frame> finish_body(std::string_view body, std::size_t consumed);

    protocol::limits limits_;
    detail::frame_reader reader_;
    std::optional<error_code> failed_;  // sticky: every error is fatal
    pending pending_ = pending::route;  // what the body being read belongs to
    session_id from_;                   // ROUTE header waiting for its body
    session_id to_;
    std::uint64_t reqid_ = 0;  // RES header waiting for its body
    std::array<char, max_token_size> token_{};
    std::size_t token_size_ = 0;
};

/// Appends `LINK <n>` and the JSON. Throws std::invalid_argument when `cluster` or `token` is
/// over its size limit.
void encode(std::string& out, const link_hello& m);
/// Appends `ROUTE <from> <to> <n> [<token>]` and the payload, growing `out` at most once and
/// allocating nothing else. Throws std::invalid_argument on a token that is not valid_token().
void encode(std::string& out, const route_msg& m);
/// Appends `RACK <from> <token> ok|<code>`. Throws std::invalid_argument on a bad token.
void encode(std::string& out, const rack_msg& m);
/// Appends `REQ <reqid> INFO|KICK <target>`.
void encode(std::string& out, const request_msg& m);
/// Appends `RES <reqid> ok <n>` and the JSON, or `RES <reqid> <code>`. Throws
/// std::invalid_argument when both `error` and `json` are set.
void encode(std::string& out, const response_msg& m);
/// Appends any link frame (`PING`, `PONG` and `-ERR` use the encoders of encoder.hpp).
void encode(std::string& out, const link_frame& m);

/// Longest line encode_route_header() writes, with its "\r\n".
inline constexpr std::size_t max_route_header_size =
    6 + 32 + 1 + 32 + 1 + 20 + 1 + max_token_size + 2;

/// Appends only the line `ROUTE <from> <to> <n> [<token>]\r\n`: for gather writes, follow it
/// with the payload and "\r\n". Writes at most max_route_header_size bytes.
void encode_route_header(std::string& out,
                         session_id from,
                         session_id to,
                         std::size_t payload_size,
                         std::string_view token = {});

}  // namespace lariv::protocol
