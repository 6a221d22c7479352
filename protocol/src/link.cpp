#include "lariv/protocol/link.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "lariv/protocol/json.hpp"
#include "text.hpp"

namespace lariv::protocol {

namespace {

using detail::bad;
using detail::check_token;
using detail::crlf;
using detail::good;
using detail::has_control;
using detail::iequals;
using detail::next_word;
using detail::parse_body_count;
using detail::put_id;
using detail::put_number;
using detail::trim;

/// Parses a request id: 1..20 decimal digits that fit 64 bits.
std::optional<std::uint64_t> parse_reqid(std::string_view word) noexcept {
    std::uint64_t v = 0;
    if (detail::parse_count(word, v) != detail::count_status::ok) {
        return std::nullopt;
    }
    return v;
}

/// Writes `ROUTE <from> <to> <n> [<token>]\r\n` to `p` (max_route_header_size bytes of room)
/// and returns its length. The token must already be checked.
std::size_t format_route_header(char* p,
                                session_id from,
                                session_id to,
                                std::size_t payload_size,
                                std::string_view token) noexcept {
    char* const start = p;
    std::memcpy(p, "ROUTE ", 6);
    p += 6;
    from.format_to(p);
    p += session_id::text_size;
    *p++ = ' ';
    to.format_to(p);
    p += session_id::text_size;
    *p++ = ' ';
    p = std::to_chars(p, p + 20, payload_size).ptr;
    if (!token.empty()) {
        *p++ = ' ';
        std::memcpy(p, token.data(), token.size());
        p += token.size();
    }
    *p++ = '\r';
    *p++ = '\n';
    return static_cast<std::size_t>(p - start);
}

/// Makes room for `n` more bytes in `out` with at most one allocation, growing geometrically
/// (a reserve() of the exact size would reallocate on every frame of a batch).
void make_room(std::string& out, std::size_t n) {
    if (out.capacity() - out.size() < n) {
        out.reserve(std::max(out.size() + n, 2 * out.capacity()));
    }
}

}  // namespace

std::string_view to_string(link_op op) noexcept {
    switch (op) {
        case link_op::info:
            return "INFO";
        case link_op::kick:
            return "KICK";
    }
    return "INFO";
}

// ---- encoders -----------------------------------------------------------------------------------

void encode(std::string& out, const link_hello& m) {
    if (m.cluster.size() > max_cluster_name_size) {
        throw std::invalid_argument("lariv::protocol: LINK cluster name over 64 bytes");
    }
    if (m.token.size() > max_link_token_size) {
        throw std::invalid_argument("lariv::protocol: LINK token over 256 bytes");
    }
    const nlohmann::json j{{"version", m.version},
                           {"cluster", m.cluster},
                           {"node", m.node},
                           {"epoch", m.epoch},
                           {"token", m.token}};
    detail::put_body(out, "LINK", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void encode_route_header(std::string& out,
                         session_id from,
                         session_id to,
                         std::size_t payload_size,
                         std::string_view token) {
    if (!token.empty()) {
        check_token(token);
    }
    char line[max_route_header_size];
    out.append(line, format_route_header(line, from, to, payload_size, token));
}

void encode(std::string& out, const route_msg& m) {
    if (!m.token.empty()) {
        check_token(m.token);
    }
    char line[max_route_header_size];
    const std::size_t n = format_route_header(line, m.from, m.to, m.payload.size(), m.token);
    make_room(out, n + m.payload.size() + crlf.size());
    out.append(line, n);
    out.append(m.payload);
    out.append(crlf);
}

void encode(std::string& out, const rack_msg& m) {
    check_token(m.token);
    out += "RACK ";
    put_id(out, m.from);
    out += ' ';
    out += m.token;
    out += ' ';
    out += m.error ? to_string(*m.error) : std::string_view("ok");
    out += crlf;
}

void encode(std::string& out, const request_msg& m) {
    out += "REQ ";
    put_number(out, m.id);
    out += ' ';
    out += to_string(m.op);
    out += ' ';
    put_id(out, m.target);
    out += crlf;
}

void encode(std::string& out, const response_msg& m) {
    if (m.error && !m.json.empty()) {
        throw std::invalid_argument("lariv::protocol: a RES with an error carries no JSON");
    }
    out += "RES ";
    put_number(out, m.id);
    out += ' ';
    if (m.error) {
        out += to_string(*m.error);
        out += crlf;
        return;
    }
    out += "ok ";
    put_number(out, m.json.size());
    out += crlf;
    out += m.json;
    out += crlf;
}

void encode(std::string& out, const link_frame& m) {
    std::visit([&out](const auto& alt) { encode(out, alt); }, m);
}

// ---- link_decoder -------------------------------------------------------------------------------

link_decoder::link_decoder(const protocol::limits& lim)
    : limits_(lim) {
    reader_.max_line = lim.max_line;
}

decode_result<link_frame> link_decoder::fail(error_code code,
                                             std::string_view why,
                                             std::size_t consumed) {
    failed_ = code;
    auto r = bad<link_frame>(code, why, consumed);
    r.fatal = true;
    return r;
}

decode_result<link_frame> link_decoder::finish_body(std::string_view body, std::size_t consumed) {
    switch (pending_) {
        case pending::route:
            return good<link_frame>(
                route_msg{from_, to_, body, std::string_view(token_.data(), token_size_)},
                consumed);
        case pending::response:
            return good<link_frame>(response_msg{reqid_, std::nullopt, body}, consumed);
        case pending::hello:
            break;
    }
    const auto j = parse_json(body, limits_);
    if (!j || !j->is_object()) {
        return fail(error_code::bad_json, "LINK body must be a JSON object within the limits",
                    consumed);
    }
    const auto u32 = [&j](const char* key, std::uint32_t& out) {
        const auto it = j->find(key);
        if (it == j->end() || !it->is_number_unsigned() ||
            it->get<std::uint64_t>() > std::numeric_limits<std::uint32_t>::max()) {
            return false;
        }
        out = static_cast<std::uint32_t>(it->get<std::uint64_t>());
        return true;
    };
    const auto str = [&j](const char* key, std::string& out, std::size_t max) {
        const auto it = j->find(key);
        if (it == j->end() || !it->is_string()) {
            return false;
        }
        const auto& s = it->get_ref<const std::string&>();
        if (s.size() > max) {
            return false;
        }
        out = s;
        return true;
    };
    link_hello h;
    if (!u32("version", h.version) || !str("cluster", h.cluster, max_cluster_name_size) ||
        !u32("node", h.node) || !u32("epoch", h.epoch) ||
        !str("token", h.token, max_link_token_size)) {
        return fail(error_code::bad_json,
                    "LINK needs version, node and epoch (32-bit unsigned), cluster (at most 64 "
                    "bytes) and token (at most 256 bytes)",
                    consumed);
    }
    return good<link_frame>(std::move(h), consumed);
}

decode_result<link_frame> link_decoder::decode(std::string_view in) {
    if (failed_) {
        auto r = bad<link_frame>(*failed_, detail::out_of_step, 0);
        r.fatal = true;
        return r;
    }
    std::size_t used = 0;
    for (;;) {
        const auto s = reader_.step(in.substr(used));
        used += s.consumed;
        using kind = detail::frame_reader::kind;
        switch (s.what) {
            case kind::need_more: {
                decode_result<link_frame> r;
                r.consumed = used;
                return r;
            }
            case kind::too_long:
                return fail(error_code::line_too_long, "control line longer than max_line", used);
            case kind::bad_terminator:
                return fail(error_code::bad_syntax, "body not followed by \\r\\n", used);
            case kind::body:
                return finish_body(s.data, used);
            case kind::line:
                break;
        }

        std::string_view rest = trim(s.data);
        if (rest.empty()) {
            continue;  // blank lines are ignored, as on client connections
        }
        const std::string_view verb = next_word(rest);

        // Frames with a body. Their words are all checked (ids, counts, tokens, "ok" and code
        // names), so a control character in the line fails a check without a separate scan.
        if (iequals(verb, "ROUTE")) {
            const auto from = session_id::parse(next_word(rest));
            const auto to = session_id::parse(next_word(rest));
            if (!from || !to) {
                return fail(error_code::bad_syntax, "ROUTE needs two session ids", used);
            }
            const auto count = parse_body_count(next_word(rest), limits_.max_payload);
            if (!count.ok) {
                return fail(count.error, count.why, used);
            }
            const std::string_view token = next_word(rest);
            if ((!token.empty() && !valid_token(token)) || !rest.empty()) {
                return fail(error_code::bad_syntax, "expected ROUTE <from> <to> <n> [<token>]",
                            used);
            }
            from_ = *from;
            to_ = *to;
            // The line may live in the reader's buffer, which the body's step releases.
            std::copy(token.begin(), token.end(), token_.begin());
            token_size_ = token.size();
            pending_ = pending::route;
            reader_.expect_body(count.value);
            continue;
        }
        if (iequals(verb, "LINK")) {
            const auto count = parse_body_count(next_word(rest), limits_.max_json);
            if (!count.ok) {
                return fail(count.error, count.why, used);
            }
            if (!rest.empty()) {
                return fail(error_code::bad_syntax, "expected LINK <n>", used);
            }
            pending_ = pending::hello;
            reader_.expect_body(count.value);
            continue;
        }
        if (iequals(verb, "RES")) {
            const auto id = parse_reqid(next_word(rest));
            const std::string_view status = next_word(rest);
            if (!id || status.empty()) {
                return fail(error_code::bad_syntax,
                            "expected RES <reqid> ok <n> | RES <reqid> <code>", used);
            }
            if (!iequals(status, "ok")) {
                const auto code = parse_error_code(status);
                if (!code || !rest.empty()) {
                    return fail(error_code::bad_syntax, "expected RES <reqid> <code>", used);
                }
                return good<link_frame>(response_msg{*id, *code, {}}, used);
            }
            const auto count = parse_body_count(next_word(rest), limits_.max_json);
            if (!count.ok) {
                return fail(count.error, count.why, used);
            }
            if (!rest.empty()) {
                return fail(error_code::bad_syntax, "expected RES <reqid> ok <n>", used);
            }
            reqid_ = *id;
            pending_ = pending::response;
            reader_.expect_body(count.value);
            continue;
        }

        if (has_control(s.data)) {
            return fail(error_code::bad_syntax, "control character in line", used);
        }
        if (iequals(verb, "RACK")) {
            const auto from = session_id::parse(next_word(rest));
            const std::string_view token = next_word(rest);
            const std::string_view status = next_word(rest);
            if (!from || !valid_token(token) || status.empty() || !rest.empty()) {
                return fail(error_code::bad_syntax, "expected RACK <from> <token> ok|<code>", used);
            }
            if (iequals(status, "ok")) {
                return good<link_frame>(rack_msg{*from, token, std::nullopt}, used);
            }
            const auto code = parse_error_code(status);
            if (!code) {
                return fail(error_code::bad_syntax, "unknown error code", used);
            }
            return good<link_frame>(rack_msg{*from, token, *code}, used);
        }
        if (iequals(verb, "REQ")) {
            const auto id = parse_reqid(next_word(rest));
            const std::string_view op_word = next_word(rest);
            const auto target = session_id::parse(next_word(rest));
            std::optional<link_op> op;
            if (iequals(op_word, "INFO")) {
                op = link_op::info;
            } else if (iequals(op_word, "KICK")) {
                op = link_op::kick;
            }
            if (!id || !op || !target || !rest.empty()) {
                return fail(error_code::bad_syntax, "expected REQ <reqid> INFO|KICK <target>",
                            used);
            }
            return good<link_frame>(request_msg{*id, *op, *target}, used);
        }
        if (iequals(verb, "PING") || iequals(verb, "PONG")) {
            if (!rest.empty()) {
                return fail(error_code::bad_syntax, "this frame takes no arguments", used);
            }
            if (iequals(verb, "PING")) {
                return good<link_frame>(ping_msg{}, used);
            }
            return good<link_frame>(pong_msg{}, used);
        }
        if (iequals(verb, "-ERR")) {
            const auto code = parse_error_code(next_word(rest));
            if (!code) {
                return fail(error_code::bad_syntax, "unknown error code", used);
            }
            return good<link_frame>(err_msg{*code, rest}, used);
        }
        return fail(error_code::unknown_command, "unknown link frame", used);
    }
}

}  // namespace lariv::protocol
