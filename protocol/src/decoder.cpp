#include "lariv/protocol/decoder.hpp"

#include <algorithm>
#include <limits>

#include "lariv/protocol/encoder.hpp"
#include "lariv/protocol/json.hpp"
#include "text.hpp"

namespace lariv::protocol {

// ---- frame_reader ------------------------------------------------------------------------------

namespace detail {

frame_reader::step_result frame_reader::step(std::string_view in) {
    // The frame handed out by the previous call lived in buf_; the caller is done with it now.
    if (release_) {
        buf_.clear();
        release_ = false;
    }
    return body_pending_ ? step_body(in) : step_line(in);
}

void frame_reader::shrink() noexcept {
    if (buf_.empty() || release_) {
        std::string().swap(buf_);
        release_ = false;
    }
}

frame_reader::step_result frame_reader::finish_line(std::string_view line,
                                                    std::size_t consumed) const {
    if (!line.empty() && line.back() == '\r') {
        line.remove_suffix(1);
    }
    if (line.size() > max_line) {
        return {kind::too_long, consumed, {}};
    }
    return {kind::line, consumed, line};
}

frame_reader::step_result frame_reader::step_line(std::string_view in) {
    // A line has at most max_line bytes plus "\r\n": search no further than that, so a peer that
    // never sends a newline is refused as soon as it passes the limit.
    const std::size_t limit = max_line + 2;
    if (buf_.empty()) {
        // Fast path: the whole line is in the input; hand out a view of it, copying nothing.
        const std::size_t pos = in.substr(0, std::min(in.size(), limit)).find('\n');
        if (pos != std::string_view::npos) {
            return finish_line(in.substr(0, pos), pos + 1);
        }
        if (in.size() >= limit) {
            return {kind::too_long, 0, {}};
        }
        buf_.assign(in);
        return {kind::need_more, in.size(), {}};
    }
    const std::size_t room = limit - buf_.size();  // buf_ never reaches limit
    const std::size_t pos = in.substr(0, std::min(in.size(), room)).find('\n');
    if (pos != std::string_view::npos) {
        buf_.append(in.substr(0, pos + 1));
        release_ = true;
        return finish_line(std::string_view(buf_).substr(0, buf_.size() - 1), pos + 1);
    }
    if (in.size() >= room) {
        return {kind::too_long, 0, {}};
    }
    buf_.append(in);
    return {kind::need_more, in.size(), {}};
}

frame_reader::step_result frame_reader::step_body(std::string_view in) {
    const std::size_t n = body_size_;
    if (buf_.empty() && in.size() > n) {
        // Fast path: the body and (at least the start of) its terminator are in the input.
        if (in[n] == '\n') {
            body_pending_ = false;
            return {kind::body, n + 1, in.substr(0, n)};
        }
        if (in[n] != '\r') {
            return {kind::bad_terminator, 0, {}};
        }
        if (in.size() > n + 1) {
            if (in[n + 1] != '\n') {
                return {kind::bad_terminator, 0, {}};
            }
            body_pending_ = false;
            return {kind::body, n + 2, in.substr(0, n)};
        }
        // Only the '\r' arrived: buffer below and wait for the '\n'.
    }
    // Slow path: gather the body plus one terminator byte, then possibly a second one. Taking
    // no more than needed keeps the next frame's bytes in the caller's input.
    std::size_t used = 0;
    if (buf_.size() < n + 1) {
        const std::size_t take = std::min(n + 1 - buf_.size(), in.size());
        buf_.append(in.substr(0, take));
        used = take;
        if (buf_.size() < n + 1) {
            return {kind::need_more, used, {}};
        }
    }
    if (buf_[n] == '\r') {
        if (buf_.size() == n + 1) {
            if (used == in.size()) {
                return {kind::need_more, used, {}};
            }
            buf_.push_back(in[used]);
            ++used;
        }
        if (buf_[n + 1] != '\n') {
            return {kind::bad_terminator, used, {}};
        }
    } else if (buf_[n] != '\n') {
        return {kind::bad_terminator, used, {}};
    }
    body_pending_ = false;
    release_ = true;
    return {kind::body, used, std::string_view(buf_).substr(0, n)};
}

}  // namespace detail

// ---- shared line parsing ------------------------------------------------------------------------

namespace {

using detail::bad;
using detail::count_status;
using detail::good;
using detail::has_control;
using detail::iequals;
using detail::next_word;
using detail::out_of_step;
using detail::parse_body_count;
using detail::trim;

}  // namespace

// ---- command_decoder
// -----------------------------------------------------------------------------

command_decoder::command_decoder(const protocol::limits& lim)
    : limits_(lim) {
    reader_.max_line = lim.max_line;
}

decode_result<command> command_decoder::decode(std::string_view in) {
    if (failed_) {
        auto r = bad<command>(*failed_, out_of_step, 0);
        r.fatal = true;
        return r;
    }
    auto fail = [this](error_code code, std::string_view why, std::size_t consumed) {
        failed_ = code;
        auto r = bad<command>(code, why, consumed);
        r.fatal = true;
        return r;
    };
    std::size_t used = 0;
    for (;;) {
        const auto s = reader_.step(in.substr(used));
        used += s.consumed;
        using kind = detail::frame_reader::kind;
        switch (s.what) {
            case kind::need_more: {
                decode_result<command> r;
                r.consumed = used;
                return r;
            }
            case kind::too_long:
                return fail(error_code::line_too_long, "control line longer than max_line", used);
            case kind::bad_terminator:
                return fail(error_code::bad_syntax, "payload not followed by \\r\\n", used);
            case kind::body:
                if (discard_) {
                    const error_code code = *discard_;
                    discard_.reset();
                    return bad<command>(code, "bad SEND header; payload skipped", used);
                }
                return good<command>(
                    send_msg{pending_to_, s.data, std::string_view(token_.data(), token_size_)},
                    used);
            case kind::line:
                break;
        }

        std::string_view rest = trim(s.data);
        if (rest.empty()) {
            continue;  // blank lines are ignored, so a person can press Enter
        }
        const std::string_view verb = next_word(rest);

        if (iequals(verb, "SEND")) {
            const std::string_view id_word = next_word(rest);
            const auto count = parse_body_count(next_word(rest), limits_.max_payload);
            if (!count.ok) {
                // Without a count the payload's end is unknown: the stream cannot go on.
                return fail(count.error, count.why, used);
            }
            const std::string_view token = next_word(rest);
            const auto to = session_id::parse(id_word);
            reader_.expect_body(count.value);
            if (!to || !rest.empty() || (!token.empty() && !valid_token(token))) {
                discard_ = error_code::bad_syntax;  // skip the payload, then report
                continue;
            }
            pending_to_ = *to;
            std::copy(token.begin(), token.end(), token_.begin());
            token_size_ = token.size();
            continue;
        }

        if (has_control(s.data)) {
            return bad<command>(error_code::bad_syntax, "control character in line", used);
        }
        if (iequals(verb, "HELLO")) {
            hello_msg h;
            if (rest.empty()) {
                return good<command>(std::move(h), used);
            }
            auto j = parse_json(rest, limits_);
            if (!j || !j->is_object()) {
                return bad<command>(error_code::bad_json,
                                    "HELLO argument must be a JSON object within the limits", used);
            }
            try {
                if (const auto it = j->find("version"); it != j->end()) {
                    if (!it->is_number_unsigned() ||
                        it->get<std::uint64_t>() > std::numeric_limits<std::uint32_t>::max()) {
                        return bad<command>(error_code::bad_json,
                                            "\"version\" must be an unsigned integer", used);
                    }
                    h.version = it->get<std::uint32_t>();
                }
                if (const auto it = j->find("name"); it != j->end()) {
                    h.name = it->get<std::string>();
                }
                if (const auto it = j->find("auth"); it != j->end()) {
                    h.auth = it->get<std::string>();
                }
                if (const auto it = j->find("verbose"); it != j->end()) {
                    h.verbose = it->get<bool>();
                }
            } catch (const nlohmann::json::exception&) {
                return bad<command>(error_code::bad_json,
                                    "HELLO fields: version number, name and auth strings, "
                                    "verbose boolean",
                                    used);
            }
            return good<command>(std::move(h), used);
        }
        if (iequals(verb, "PING") || iequals(verb, "PONG") || iequals(verb, "STATS") ||
            iequals(verb, "QUIT")) {
            if (!rest.empty()) {
                return bad<command>(error_code::bad_syntax, "this command takes no arguments",
                                    used);
            }
            if (iequals(verb, "PING")) {
                return good<command>(ping_msg{}, used);
            }
            if (iequals(verb, "PONG")) {
                return good<command>(pong_msg{}, used);
            }
            if (iequals(verb, "STATS")) {
                return good<command>(stats_msg{}, used);
            }
            return good<command>(quit_msg{}, used);
        }
        if (iequals(verb, "INFO") || iequals(verb, "KICK")) {
            const auto id = session_id::parse(next_word(rest));
            if (!id || !rest.empty()) {
                return bad<command>(error_code::bad_syntax,
                                    "expected one session id of 32 hex digits", used);
            }
            if (iequals(verb, "INFO")) {
                return good<command>(info_msg{*id}, used);
            }
            return good<command>(kick_msg{*id}, used);
        }
        if (iequals(verb, "LIST")) {
            list_msg m;
            bool seen_after = false;
            bool seen_limit = false;
            while (!rest.empty()) {
                const std::string_view arg = next_word(rest);
                const std::size_t eq = arg.find('=');
                const std::string_view key = arg.substr(0, eq);
                const std::string_view value =
                    eq == std::string_view::npos ? std::string_view{} : arg.substr(eq + 1);
                if (iequals(key, "after") && !seen_after && eq != std::string_view::npos) {
                    m.after = session_id::parse(value);
                    if (!m.after) {
                        return bad<command>(error_code::bad_syntax,
                                            "after= needs a session id of 32 hex digits", used);
                    }
                    seen_after = true;
                } else if (iequals(key, "limit") && !seen_limit && eq != std::string_view::npos) {
                    std::uint64_t v = 0;
                    if (detail::parse_count(value, v) != count_status::ok || v == 0 ||
                        v > limits_.max_list) {
                        return bad<command>(error_code::bad_syntax,
                                            "limit= must be between 1 and max_list", used);
                    }
                    m.limit = static_cast<std::uint32_t>(v);
                    seen_limit = true;
                } else {
                    return bad<command>(error_code::bad_syntax,
                                        "LIST takes after=<id> and limit=<n>, each at most once",
                                        used);
                }
            }
            return good<command>(m, used);
        }
        return bad<command>(error_code::unknown_command, "unknown command", used);
    }
}

// ---- reply_decoder
// -------------------------------------------------------------------------------

reply_decoder::reply_decoder(const protocol::limits& lim)
    : limits_(lim) {
    reader_.max_line = lim.max_line;
}

decode_result<reply> reply_decoder::decode(std::string_view in) {
    if (failed_) {
        auto r = bad<reply>(*failed_, out_of_step, 0);
        r.fatal = true;
        return r;
    }
    auto fail = [this](error_code code, std::string_view why, std::size_t consumed) {
        failed_ = code;
        auto r = bad<reply>(code, why, consumed);
        r.fatal = true;
        return r;
    };
    std::size_t used = 0;
    for (;;) {
        const auto s = reader_.step(in.substr(used));
        used += s.consumed;
        using kind = detail::frame_reader::kind;
        switch (s.what) {
            case kind::need_more: {
                decode_result<reply> r;
                r.consumed = used;
                return r;
            }
            case kind::too_long:
                return fail(error_code::line_too_long, "control line longer than max_line", used);
            case kind::bad_terminator:
                return fail(error_code::bad_syntax, "payload not followed by \\r\\n", used);
            case kind::body:
                if (discard_) {
                    const error_code code = *discard_;
                    discard_.reset();
                    return bad<reply>(code, "bad MSG header; payload skipped", used);
                }
                if (pending_msg_) {
                    return good<reply>(deliver_msg{pending_from_, s.data}, used);
                }
                return good<reply>(body_msg{pending_kind_, s.data}, used);
            case kind::line:
                break;
        }

        std::string_view rest = trim(s.data);
        if (rest.empty()) {
            continue;
        }
        const std::string_view verb = next_word(rest);

        if (iequals(verb, "MSG")) {
            const std::string_view id_word = next_word(rest);
            const auto count = parse_body_count(next_word(rest), limits_.max_payload);
            if (!count.ok) {
                return fail(count.error, count.why, used);
            }
            const auto from = session_id::parse(id_word);
            reader_.expect_body(count.value);
            if (!from || !rest.empty()) {
                discard_ = error_code::bad_syntax;
                continue;
            }
            pending_msg_ = true;
            pending_from_ = *from;
            continue;
        }
        static constexpr body_kind kinds[] = {body_kind::hello, body_kind::info, body_kind::list,
                                              body_kind::stats};
        std::optional<body_kind> body;
        if (verb.size() > 1 && verb.front() == '+') {
            for (const body_kind k : kinds) {
                if (iequals(verb.substr(1), to_string(k))) {
                    body = k;
                }
            }
        }
        if (body) {
            const auto count = parse_body_count(next_word(rest), limits_.max_json);
            if (!count.ok) {
                return fail(count.error, count.why, used);
            }
            reader_.expect_body(count.value);
            if (!rest.empty()) {
                discard_ = error_code::bad_syntax;
                continue;
            }
            pending_msg_ = false;
            pending_kind_ = *body;
            continue;
        }

        if (has_control(s.data)) {
            return bad<reply>(error_code::bad_syntax, "control character in line", used);
        }
        if (iequals(verb, "+OK")) {
            return good<reply>(ok_msg{rest}, used);
        }
        if (iequals(verb, "-ERR")) {
            const auto code = parse_error_code(next_word(rest));
            if (!code) {
                return bad<reply>(error_code::bad_syntax, "unknown error code", used);
            }
            return good<reply>(err_msg{*code, rest}, used);
        }
        if (iequals(verb, "PING") || iequals(verb, "PONG")) {
            if (!rest.empty()) {
                return bad<reply>(error_code::bad_syntax, "this message takes no arguments", used);
            }
            if (iequals(verb, "PING")) {
                return good<reply>(ping_msg{}, used);
            }
            return good<reply>(pong_msg{}, used);
        }
        if (iequals(verb, "ACK")) {
            const std::string_view token = next_word(rest);
            const std::string_view status = next_word(rest);
            if (!valid_token(token) || status.empty() || !rest.empty()) {
                return bad<reply>(error_code::bad_syntax, "expected ACK <token> ok|<code>", used);
            }
            if (iequals(status, "ok")) {
                return good<reply>(ack_msg{token, std::nullopt}, used);
            }
            const auto code = parse_error_code(status);
            if (!code) {
                return bad<reply>(error_code::bad_syntax, "unknown error code", used);
            }
            return good<reply>(ack_msg{token, *code}, used);
        }
        return bad<reply>(error_code::unknown_command, "unknown reply", used);
    }
}

}  // namespace lariv::protocol
