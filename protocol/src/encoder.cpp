#include "lariv/protocol/encoder.hpp"

#include <array>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "text.hpp"

namespace lariv::protocol {

namespace {

using detail::check_token;
using detail::crlf;
using detail::put_body;
using detail::put_id;
using detail::put_number;

// Control characters would end or corrupt the line: replace them, then trim blanks so that the
// decoder's trimming gives back exactly what was written.
void put_text(std::string& out, std::string_view text) {
    std::string clean(text);
    for (char& c : clean) {
        if (detail::is_control(c)) {
            c = ' ';
        }
    }
    const std::string_view t = detail::trim(clean);
    if (!t.empty()) {
        out += ' ';
        out += t;
    }
}

}  // namespace

namespace {
/// 1 for the token alphabet [A-Za-z0-9_.:-], 0 otherwise.
constexpr std::array<std::uint8_t, 256> token_table = [] {
    std::array<std::uint8_t, 256> t{};
    for (int c = 0; c < 256; ++c) {
        t[static_cast<std::size_t>(c)] = static_cast<std::uint8_t>(
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
            c == '.' || c == ':' || c == '-');
    }
    return t;
}();
}  // namespace

// Every SEND with a token and every ACK runs this: a table lookup per byte, ANDed together and
// checked once, instead of a chain of range compares and a branch per byte.
bool valid_token(std::string_view token) noexcept {
    if (token.empty() || token.size() > max_token_size) {
        return false;
    }
    std::uint8_t ok = 1;
    for (const char c : token) {
        ok &= token_table[static_cast<unsigned char>(c)];
    }
    return ok != 0;
}

void encode(std::string& out, const hello_msg& m) {
    nlohmann::json j{{"version", m.version}};
    if (!m.name.empty()) {
        j["name"] = m.name;
    }
    if (!m.auth.empty()) {
        j["auth"] = m.auth;
    }
    if (m.verbose) {
        j["verbose"] = true;
    }
    out += "HELLO ";
    // JSON escapes every control character, so the text is line-safe; bad UTF-8 is replaced.
    out += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    out += crlf;
}

void encode(std::string& out, const ping_msg& /*m*/) {
    out += "PING\r\n";
}

void encode(std::string& out, const pong_msg& /*m*/) {
    out += "PONG\r\n";
}

void encode_send_header(std::string& out,
                        session_id to,
                        std::size_t payload_size,
                        std::string_view token) {
    out += "SEND ";
    put_id(out, to);
    out += ' ';
    put_number(out, payload_size);
    if (!token.empty()) {
        check_token(token);
        out += ' ';
        out += token;
    }
    out += crlf;
}

void encode(std::string& out, const send_msg& m) {
    encode_send_header(out, m.to, m.payload.size(), m.token);
    out += m.payload;
    out += crlf;
}

void encode(std::string& out, const info_msg& m) {
    out += "INFO ";
    put_id(out, m.id);
    out += crlf;
}

void encode(std::string& out, const list_msg& m) {
    out += "LIST";
    if (m.after) {
        out += " after=";
        put_id(out, *m.after);
    }
    if (m.limit != 0) {
        out += " limit=";
        put_number(out, m.limit);
    }
    out += crlf;
}

void encode(std::string& out, const kick_msg& m) {
    out += "KICK ";
    put_id(out, m.id);
    out += crlf;
}

void encode(std::string& out, const stats_msg& /*m*/) {
    out += "STATS\r\n";
}

void encode(std::string& out, const quit_msg& /*m*/) {
    out += "QUIT\r\n";
}

void encode(std::string& out, const command& m) {
    std::visit([&out](const auto& alt) { encode(out, alt); }, m);
}

void encode(std::string& out, const ok_msg& m) {
    out += "+OK";
    put_text(out, m.text);
    out += crlf;
}

void encode(std::string& out, const err_msg& m) {
    out += "-ERR ";
    out += to_string(m.code);
    put_text(out, m.message);
    out += crlf;
}

void encode_deliver_header(std::string& out, session_id from, std::size_t payload_size) {
    out += "MSG ";
    put_id(out, from);
    out += ' ';
    put_number(out, payload_size);
    out += crlf;
}

std::size_t format_deliver_header(char* out, session_id from, std::size_t payload_size) noexcept {
    // One sender's SENDs arrive in bursts (a read batch) and are routed on its I/O thread, so
    // the last id formatted here is usually the one asked for again.
    struct last_id {
        session_id id{};
        char text[session_id::text_size]{};
        bool valid = false;
    };
    thread_local last_id last;
    if (!last.valid || last.id != from) {
        from.format_to(last.text);
        last.id = from;
        last.valid = true;
    }
    char* p = out;
    std::memcpy(p, "MSG ", 4);
    p += 4;
    std::memcpy(p, last.text, session_id::text_size);
    p += session_id::text_size;
    *p++ = ' ';
    p = std::to_chars(p, p + 20, payload_size).ptr;
    *p++ = '\r';
    *p++ = '\n';
    return static_cast<std::size_t>(p - out);
}

void encode(std::string& out, const deliver_msg& m) {
    encode_deliver_header(out, m.from, m.payload.size());
    out += m.payload;
    out += crlf;
}

void encode(std::string& out, const ack_msg& m) {
    check_token(m.token);
    out += "ACK ";
    out += m.token;
    out += ' ';
    out += m.error ? to_string(*m.error) : std::string_view("ok");
    out += crlf;
}

void encode(std::string& out, const body_msg& m) {
    std::string verb = "+";
    verb += to_string(m.kind);
    put_body(out, verb, m.json);
}

void encode(std::string& out, const reply& m) {
    std::visit([&out](const auto& alt) { encode(out, alt); }, m);
}

void encode_body(std::string& out, body_kind kind, const nlohmann::json& j) {
    encode(out, body_msg{kind, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)});
}

void encode(std::string& out, const hello_reply& r) {
    encode_body(out, body_kind::hello, r);
}

void encode(std::string& out, const session_info& s) {
    encode_body(out, body_kind::info, s);
}

void encode(std::string& out, const list_page& p) {
    encode_body(out, body_kind::list, p);
}

}  // namespace lariv::protocol
