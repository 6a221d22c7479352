#pragma once
/// \file
/// Encoders for every message. Each appends one complete frame to `out`.
///
/// Free text (`+OK` text, `-ERR` message) is made line-safe: control characters become spaces
/// and surrounding blanks are trimmed. Tokens must satisfy valid_token(), or the encoder throws
/// std::invalid_argument. Payloads are copied as they are.

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "lariv/protocol/json.hpp"
#include "lariv/protocol/message.hpp"

namespace lariv::protocol {

/// Longest header line that encode_send_header()/encode_deliver_header() write, with "\r\n".
inline constexpr std::size_t max_header_size = 5 + 32 + 1 + 20 + 1 + max_token_size + 2;

/// True for 1..64 bytes of [A-Za-z0-9_.:-], the ack token syntax.
[[nodiscard]] bool valid_token(std::string_view token) noexcept;

/// Appends `HELLO [json]`.
void encode(std::string& out, const hello_msg& m);
/// Appends `PING`.
void encode(std::string& out, const ping_msg& m);
/// Appends `PONG`.
void encode(std::string& out, const pong_msg& m);
/// Appends `SEND <to> <n> [token]` and the payload.
void encode(std::string& out, const send_msg& m);
/// Appends `INFO <id>`.
void encode(std::string& out, const info_msg& m);
/// Appends `LIST [after=<id>] [limit=N]`.
void encode(std::string& out, const list_msg& m);
/// Appends `KICK <id>`.
void encode(std::string& out, const kick_msg& m);
/// Appends `STATS`.
void encode(std::string& out, const stats_msg& m);
/// Appends `QUIT`.
void encode(std::string& out, const quit_msg& m);
/// Appends any command.
void encode(std::string& out, const command& m);

/// Appends `+OK [text]`.
void encode(std::string& out, const ok_msg& m);
/// Appends `-ERR <code> [message]`.
void encode(std::string& out, const err_msg& m);
/// Appends `MSG <from> <n>` and the payload.
void encode(std::string& out, const deliver_msg& m);
/// Appends `ACK <token> ok|<code>`.
void encode(std::string& out, const ack_msg& m);
/// Appends `+<KIND> <n>` and the JSON text, as given.
void encode(std::string& out, const body_msg& m);
/// Appends any reply.
void encode(std::string& out, const reply& m);

/// Appends `+<KIND> <n>` and `j` serialised compactly.
void encode_body(std::string& out, body_kind kind, const nlohmann::json& j);
/// Appends the `+HELLO` reply.
void encode(std::string& out, const hello_reply& r);
/// Appends an `+INFO` reply.
void encode(std::string& out, const session_info& s);
/// Appends a `+LIST` reply.
void encode(std::string& out, const list_page& p);

/// Appends only the line `SEND <to> <n> [token]\r\n`: for gather writes, follow it with the
/// payload and "\r\n". Writes at most max_header_size bytes.
void encode_send_header(std::string& out,
                        session_id to,
                        std::size_t payload_size,
                        std::string_view token = {});
/// Appends only the line `MSG <from> <n>\r\n`: the server's zero-copy delivery path writes it,
/// then the payload, then "\r\n".
void encode_deliver_header(std::string& out, session_id from, std::size_t payload_size);

/// Longest `MSG <from> <n>\r\n` line: "MSG " + 32 hex digits + ' ' + 20 digits + "\r\n".
inline constexpr std::size_t max_deliver_header_size = 4 + 32 + 1 + 20 + 2;
/// Writes `MSG <from> <n>\r\n` into `out` (at least max_deliver_header_size bytes) and returns
/// its length: the routing path's form, with no allocation. The 32 hex digits of the last `from`
/// formatted on this thread are kept, so a burst of messages from one sender formats its id once.
std::size_t format_deliver_header(char* out, session_id from, std::size_t payload_size) noexcept;

}  // namespace lariv::protocol
