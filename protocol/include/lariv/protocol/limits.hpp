#pragma once
/// \file
/// Run-time limits that bound what a peer can make the codec buffer or parse.

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace lariv::protocol {

/// The protocol version this codec speaks (HELLO "version", PROTOCOL.md title).
inline constexpr std::uint32_t protocol_version = 1;

/// Longest ack token, in bytes.
inline constexpr std::size_t max_token_size = 64;

/// Limits, set at run time (daemon flags, tests, the small-limit fuzz build).
///
/// Every limit is checked before bytes are buffered: a control line is rejected as soon as it
/// passes `max_line` without a newline, and a declared payload or JSON length above its limit is
/// rejected when the header line is read, without waiting for the bytes.
struct limits {
    /// Longest control line, without its "\r\n" terminator.
    std::size_t max_line = 4096;
    /// Largest SEND/MSG payload.
    std::size_t max_payload = 1024 * 1024;
    /// Largest JSON text: a HELLO argument, or a `+HELLO/+INFO/+LIST/+STATS` body.
    std::size_t max_json = 64 * 1024;
    /// Deepest nesting of JSON arrays and objects accepted (1 = a flat object).
    std::size_t max_json_depth = 8;
    /// Largest `LIST limit=N`.
    std::uint32_t max_list = 1000;

    /// Upper bound on what a decoder ever holds in its internal buffer.
    [[nodiscard]] constexpr std::size_t max_buffered() const noexcept {
        return std::max(max_line, std::max(max_payload, max_json)) + 2;
    }

    /// Bytes of the largest MSG frame a server writes under these limits:
    /// "MSG " + 32-hex id + " " + count + "\r\n" + max_payload bytes + "\r\n". A session's
    /// outbound queue cap must hold one (registry_options::validate checks it).
    [[nodiscard]] constexpr std::size_t max_msg_frame() const noexcept {
        std::size_t digits = 1;
        for (std::size_t v = max_payload; v >= 10; v /= 10) {
            ++digits;
        }
        return 4 + 32 + 1 + digits + 2 + max_payload + 2;
    }

    friend constexpr bool operator==(const limits&, const limits&) = default;
};

}  // namespace lariv::protocol
