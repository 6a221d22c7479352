#pragma once
// Small text and decoding helpers shared by the codec's sources (not installed).

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "lariv/protocol/decoder.hpp"
#include "lariv/protocol/encoder.hpp"
#include "lariv/protocol/error.hpp"
#include "lariv/protocol/session_id.hpp"

namespace lariv::protocol::detail {

/// ASCII case-insensitive equality.
inline bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; };
        if (lower(a[i]) != lower(b[i])) {
            return false;
        }
    }
    return true;
}

/// Space or tab: the separators inside a control line.
inline bool is_blank(char c) noexcept {
    return c == ' ' || c == '\t';
}

/// Bytes that may not appear in a control line: C0 controls other than tab, and DEL.
inline bool is_control(char c) noexcept {
    const auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && c != '\t') || u == 0x7f;
}

/// True when `s` holds a byte that may not appear in a control line.
inline bool has_control(std::string_view s) noexcept {
    return std::any_of(s.begin(), s.end(), is_control);
}

/// Drops leading and trailing blanks.
inline std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && is_blank(s.front())) {
        s.remove_prefix(1);
    }
    while (!s.empty() && is_blank(s.back())) {
        s.remove_suffix(1);
    }
    return s;
}

/// Splits off the first blank-separated word of `s` (which must be trimmed at the front).
inline std::string_view next_word(std::string_view& s) noexcept {
    std::size_t i = 0;
    while (i < s.size() && !is_blank(s[i])) {
        ++i;
    }
    const std::string_view word = s.substr(0, i);
    s.remove_prefix(i);
    s = trim(s);
    return word;
}

/// Outcome of parsing a decimal count.
enum class count_status : std::uint8_t { ok, invalid, overflow };

/// Parses 1..20 decimal digits, nothing else. The limit applies to the text, leading zeros
/// included (the grammar's 1*20DIGIT): more than 20 digits, or a value beyond 64 bits, report
/// overflow.
inline count_status parse_count(std::string_view s, std::uint64_t& value) noexcept {
    if (s.empty()) {
        return count_status::invalid;
    }
    for (char c : s) {
        if (c < '0' || c > '9') {
            return count_status::invalid;
        }
    }
    if (s.size() > 20) {
        return count_status::overflow;
    }
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (ec == std::errc::result_out_of_range) {
        return count_status::overflow;
    }
    return (ec == std::errc{} && ptr == s.data() + s.size()) ? count_status::ok
                                                             : count_status::invalid;
}

// ---- decoding helpers shared by the decoders ---------------------------------------------------

/// A non-fatal `bad` result (the decoders set `fatal` where the stream cannot go on).
template <class Message>
decode_result<Message> bad(error_code code, std::string_view why, std::size_t consumed) {
    decode_result<Message> r;
    r.status = decode_status::bad;
    r.error = code;
    r.fatal = false;
    r.detail = why;
    r.consumed = consumed;
    return r;
}

/// A `good` result holding `m`.
template <class Message, class M>
decode_result<Message> good(M&& m, std::size_t consumed) {
    decode_result<Message> r;
    r.status = decode_status::good;
    r.message = std::forward<M>(m);
    r.consumed = consumed;
    return r;
}

/// What parsing the count of a body line (SEND, MSG, +KIND, LINK, ROUTE, RES) gave.
struct count_result {
    bool ok = false;
    std::size_t value = 0;
    error_code error = error_code::bad_syntax;
    std::string_view why;
};

/// Parses a body count: `bad_syntax` when it is not digits, `frame_too_large` above `max`.
inline count_result parse_body_count(std::string_view word, std::size_t max) noexcept {
    std::uint64_t v = 0;
    switch (parse_count(word, v)) {
        case count_status::invalid:
            return {false, 0, error_code::bad_syntax, "byte count must be decimal digits"};
        case count_status::overflow:
            return {false, 0, error_code::frame_too_large, "byte count above the limit"};
        case count_status::ok:
            break;
    }
    if (v > max) {
        return {false, 0, error_code::frame_too_large, "byte count above the limit"};
    }
    return {true, static_cast<std::size_t>(v), error_code::bad_syntax, {}};
}

/// The detail of every result after a fatal error.
inline constexpr std::string_view out_of_step = "stream out of step after an earlier fatal error";

// ---- encoding helpers shared by the encoders ---------------------------------------------------

/// The line terminator every encoder writes.
inline constexpr std::string_view crlf = "\r\n";

/// Appends the 32 hex digits of `id`, formatted in place (no temporary string).
inline void put_id(std::string& out, session_id id) {
    const std::size_t at = out.size();
    out.resize(at + session_id::text_size);
    id.format_to(out.data() + at);
}

/// Appends `n` in decimal.
inline void put_number(std::string& out, std::uint64_t n) {
    char digits[20];
    const auto res = std::to_chars(std::begin(digits), std::end(digits), n);
    out.append(digits, res.ptr);
}

/// Throws std::invalid_argument unless valid_token(token).
inline void check_token(std::string_view token) {
    if (!valid_token(token)) {
        throw std::invalid_argument("lariv::protocol: ack token must be 1..64 of [A-Za-z0-9_.:-]");
    }
}

/// Appends `<verb> <n>\r\n<body>\r\n`.
inline void put_body(std::string& out, std::string_view verb, std::string_view body) {
    out += verb;
    out += ' ';
    put_number(out, body.size());
    out += crlf;
    out += body;
    out += crlf;
}

}  // namespace lariv::protocol::detail
