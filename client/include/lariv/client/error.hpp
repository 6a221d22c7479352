// lariv/client/error.hpp — the protocol's error codes as std::error_code, and the client's own.
//
// Every verdict the server gives (`ACK <token> <code>`, `-ERR <code>`) reaches a completion
// handler as a std::error_code of category "lariv" whose value is the stable number of
// PROTOCOL.md section 7 and whose message() is the wire name:
//
//     if (ec == lariv::protocol::error_code::unknown_session) { ... }
//
// Failures found on this side (not connected, a reply that breaks the protocol, ...) are
// lariv::client::errc values of category "lariv.client". Transport failures stay Asio's
// (asio::error::eof, connection_reset, operation_aborted, ...).
#pragma once

#include <optional>
#include <system_error>
#include <type_traits>

#include "lariv/protocol/error.hpp"

namespace lariv::client {

/// Errors the client library finds by itself.
enum class errc {
    not_connected = 1,  ///< the connection is not open (not yet connected, closing or closed)
    already_connected,  ///< async_connect on a connection that connected before
    bad_reply,          ///< the server sent something the protocol does not allow here
    payload_too_large,  ///< a payload over the server's max_payload; nothing was sent
    bad_address,        ///< "host:port" could not be split
    reconnecting,       ///< the connection dropped and is reconnecting: the operation was not started
};

/// The category of lariv::protocol::error_code values: name "lariv", messages are wire names.
[[nodiscard]] const std::error_category& protocol_category() noexcept;
/// The category of errc values: name "lariv.client".
[[nodiscard]] const std::error_category& client_category() noexcept;

/// errc as a std::error_code.
[[nodiscard]] std::error_code make_error_code(errc e) noexcept;

/// The protocol code `ec` carries, if it is of protocol_category() and a known number.
[[nodiscard]] std::optional<protocol::error_code> protocol_code(const std::error_code& ec) noexcept;

}  // namespace lariv::client

namespace lariv::protocol {
/// A protocol error code as a std::error_code of lariv::client::protocol_category(). Found by
/// ADL, so `std::error_code ec = protocol::error_code::queue_full;` and `ec == code` work.
[[nodiscard]] std::error_code make_error_code(error_code e) noexcept;
}  // namespace lariv::protocol

template <>
struct std::is_error_code_enum<lariv::protocol::error_code> : std::true_type {};
template <>
struct std::is_error_code_enum<lariv::client::errc> : std::true_type {};
