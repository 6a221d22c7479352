#pragma once
/// \file
/// The protocol's messages: commands (client to server), replies and events (server to client).
///
/// Text fields are `std::string_view`s into the decoder's buffer or the caller's input. A decoded
/// message is valid until the next call on the decoder that produced it, and only while the input
/// passed to that call is alive. Copy what must live longer.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "lariv/protocol/error.hpp"
#include "lariv/protocol/limits.hpp"
#include "lariv/protocol/session_id.hpp"

namespace lariv::protocol {

// ---- client to server -------------------------------------------------------------------------

/// `HELLO [json]`: the handshake. Not on the hot path, so it owns its strings.
struct hello_msg {
    std::uint32_t version = protocol_version;  ///< protocol version the client speaks
    std::string name;                          ///< optional client name (for INFO/LIST)
    std::string auth;                          ///< optional auth token
    bool verbose = false;                      ///< reply `+OK` to every untokened SEND
    friend bool operator==(const hello_msg&, const hello_msg&) = default;
};

/// `PING`: either side asks for a `PONG`.
struct ping_msg {
    friend bool operator==(const ping_msg&, const ping_msg&) = default;
};

/// `PONG`: the answer to a `PING`.
struct pong_msg {
    friend bool operator==(const pong_msg&, const pong_msg&) = default;
};

/// `SEND <to> <nbytes> [token]` + payload: relay bytes to a session.
struct send_msg {
    session_id to;             ///< target session
    std::string_view payload;  ///< opaque bytes, any content
    std::string_view token;    ///< ack token; empty when no ACK is wanted
    friend bool operator==(const send_msg&, const send_msg&) = default;
};

/// `INFO <id>`: describe one session.
struct info_msg {
    session_id id;  ///< session asked about
    friend bool operator==(const info_msg&, const info_msg&) = default;
};

/// `LIST [after=<id>] [limit=N]`: one page of live sessions, in id order.
struct list_msg {
    std::optional<session_id> after;  ///< start after this id (the previous page's "next")
    std::uint32_t limit = 0;          ///< page size; 0 means the server's default
    friend bool operator==(const list_msg&, const list_msg&) = default;
};

/// `KICK <id>`: close a session (admin).
struct kick_msg {
    session_id id;  ///< session to close
    friend bool operator==(const kick_msg&, const kick_msg&) = default;
};

/// `STATS`: server counters.
struct stats_msg {
    friend bool operator==(const stats_msg&, const stats_msg&) = default;
};

/// `QUIT`: the client is leaving; the server replies `+OK bye` and closes.
struct quit_msg {
    friend bool operator==(const quit_msg&, const quit_msg&) = default;
};

/// Anything a client sends.
using command = std::variant<hello_msg,
                             ping_msg,
                             pong_msg,
                             send_msg,
                             info_msg,
                             list_msg,
                             kick_msg,
                             stats_msg,
                             quit_msg>;

// ---- server to client -------------------------------------------------------------------------

/// `+OK [text]`: success without a body.
struct ok_msg {
    std::string_view text;  ///< optional human-readable text
    friend bool operator==(const ok_msg&, const ok_msg&) = default;
};

/// `-ERR <code> [message]`: an error reply.
struct err_msg {
    error_code code = error_code::internal;  ///< stable code
    std::string_view message;                ///< human-readable detail
    friend bool operator==(const err_msg&, const err_msg&) = default;
};

/// `MSG <from> <nbytes>` + payload: bytes relayed from another session.
struct deliver_msg {
    session_id from;           ///< sender's session
    std::string_view payload;  ///< opaque bytes, as sent
    friend bool operator==(const deliver_msg&, const deliver_msg&) = default;
};

/// `ACK <token> ok|<code>`: the outcome of a tokened SEND.
struct ack_msg {
    std::string_view token;           ///< the SEND's token
    std::optional<error_code> error;  ///< nullopt: delivered to the target's queue
    friend bool operator==(const ack_msg&, const ack_msg&) = default;
};

/// Which structured reply a JSON body is.
enum class body_kind : std::uint8_t {
    hello,  ///< `+HELLO`: the handshake reply, a hello_reply
    info,   ///< `+INFO`: a session_info
    list,   ///< `+LIST`: a list_page
    stats,  ///< `+STATS`: a free-form object of counters
};

/// `+<KIND> <nbytes>` + JSON: a structured reply. The decoder checks the size, not the JSON;
/// parse it with parse_json() or parse_body<T>().
struct body_msg {
    body_kind kind = body_kind::stats;  ///< which reply
    std::string_view json;              ///< the JSON text
    friend bool operator==(const body_msg&, const body_msg&) = default;
};

/// Anything a server sends.
using reply = std::variant<ok_msg, err_msg, ping_msg, pong_msg, deliver_msg, ack_msg, body_msg>;

/// The upper-case wire verb of a body kind without its '+', e.g. "LIST".
[[nodiscard]] std::string_view to_string(body_kind kind) noexcept;

}  // namespace lariv::protocol
