#pragma once
/// \file
/// Incremental decoders: bytes in, messages out. No I/O, no Asio, no threads.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "lariv/protocol/error.hpp"
#include "lariv/protocol/limits.hpp"
#include "lariv/protocol/message.hpp"

namespace lariv::protocol {

/// What one decode() call produced.
enum class decode_status : std::uint8_t {
    good,       ///< `message` holds a complete message
    need_more,  ///< every input byte was consumed and buffered; call again with more
    bad,        ///< `error` says what to reply; `fatal` says whether to close
};

/// The result of one decode() call.
template <class Message>
struct decode_result {
    decode_status status = decode_status::need_more;  ///< what happened
    std::size_t consumed = 0;                 ///< input bytes used; drop them before the next call
    Message message{};                        ///< the message, when status == good
    error_code error = error_code::internal;  ///< the error, when status == bad
    bool fatal = false;       ///< when bad: the stream is out of step and the decoder refuses more
    std::string_view detail;  ///< when bad: a human-readable message for the `-ERR` reply
};

namespace detail {

/// Splits a byte stream into control lines and length-prefixed bodies, holding at most
/// `limits::max_buffered()` bytes. Shared by both decoders. Thread-compatible.
class frame_reader {
public:
    /// What step() found.
    enum class kind : std::uint8_t { line, body, need_more, too_long, bad_terminator };
    /// One step's outcome; `data` is the line (without terminator) or the body.
    struct step_result {
        kind what = kind::need_more;
        std::size_t consumed = 0;
        std::string_view data;
    };

    /// Reads one line or, after expect_body(), one body. Never reads past `in`.
    [[nodiscard]] step_result step(std::string_view in);
    /// The next step reads `n` bytes plus a "\r\n" or "\n" terminator.
    void expect_body(std::size_t n) noexcept {
        body_pending_ = true;
        body_size_ = n;
    }
    /// Bytes held in the internal buffer now.
    [[nodiscard]] std::size_t buffered() const noexcept { return buf_.size(); }
    /// Frees the buffer's memory if it holds nothing (e.g. when the connection goes idle).
    void shrink() noexcept;

    std::size_t max_line = 0;  ///< the line limit, copied from limits

private:
    [[nodiscard]] step_result step_line(std::string_view in);
    [[nodiscard]] step_result step_body(std::string_view in);
    [[nodiscard]] step_result finish_line(std::string_view line, std::size_t consumed) const;

    std::string buf_;            // a partial line, or a partial body; never both
    bool release_ = false;       // buf_ holds a frame handed out last call; clear it first
    bool body_pending_ = false;  // the next frame is a body of body_size_ bytes
    std::size_t body_size_ = 0;
};

}  // namespace detail

/// Decodes what a client sends (the server's side of a connection).
///
/// Feed it bytes as they arrive; each call decodes at most one message:
/// ```
/// while (!in.empty()) {
///     auto r = dec.decode(in);
///     in.remove_prefix(r.consumed);
///     if (r.status == decode_status::need_more) break;       // all of `in` is buffered
///     if (r.status == decode_status::bad) { reply_error(r); if (r.fatal) close(); continue; }
///     handle(r.message);
/// }
/// ```
/// Views in a result are valid until the next decode() call, and while `in` is alive: a frame
/// that arrived whole is not copied. A non-fatal error consumed the offending frame and the
/// next call goes on with the next one; after a fatal error every call returns the same error.
/// Thread-compatible: one decoder per connection.
class command_decoder {
public:
    /// A decoder with the given limits.
    explicit command_decoder(const limits& lim = {});
    /// Decodes at most one command from `in`.
    [[nodiscard]] decode_result<command> decode(std::string_view in);
    /// Decodes at most one command from `in` (byte overload).
    [[nodiscard]] decode_result<command> decode(std::span<const std::byte> in) {
        return decode(std::string_view(reinterpret_cast<const char*>(in.data()), in.size()));
    }
    /// Bytes held internally (at most limits().max_buffered()).
    [[nodiscard]] std::size_t buffered() const noexcept { return reader_.buffered(); }
    /// Frees buffer memory while nothing is buffered.
    void shrink() noexcept { reader_.shrink(); }
    /// The limits in force.
    [[nodiscard]] const protocol::limits& limits() const noexcept { return limits_; }

private:
    protocol::limits limits_;
    detail::frame_reader reader_;
    std::optional<error_code> failed_;   // sticky fatal error
    std::optional<error_code> discard_;  // body being skipped after a bad SEND header
    session_id pending_to_;              // SEND header waiting for its body
    std::array<char, max_token_size> token_{};
    std::size_t token_size_ = 0;
};

/// Decodes what a server sends (the client's side of a connection). Same contract as
/// command_decoder. Bodies of `+HELLO/+INFO/+LIST/+STATS` are bounded by limits::max_json.
class reply_decoder {
public:
    /// A decoder with the given limits.
    explicit reply_decoder(const limits& lim = {});
    /// Decodes at most one reply from `in`.
    [[nodiscard]] decode_result<reply> decode(std::string_view in);
    /// Decodes at most one reply from `in` (byte overload).
    [[nodiscard]] decode_result<reply> decode(std::span<const std::byte> in) {
        return decode(std::string_view(reinterpret_cast<const char*>(in.data()), in.size()));
    }
    /// Bytes held internally (at most limits().max_buffered()).
    [[nodiscard]] std::size_t buffered() const noexcept { return reader_.buffered(); }
    /// Frees buffer memory while nothing is buffered.
    void shrink() noexcept { reader_.shrink(); }
    /// The limits in force.
    [[nodiscard]] const protocol::limits& limits() const noexcept { return limits_; }

private:
    protocol::limits limits_;
    detail::frame_reader reader_;
    std::optional<error_code> failed_;
    std::optional<error_code> discard_;
    bool pending_msg_ = false;  // true: MSG body; false: JSON body of kind pending_kind_
    session_id pending_from_;
    body_kind pending_kind_ = body_kind::stats;
};

}  // namespace lariv::protocol
