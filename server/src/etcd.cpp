// The etcd v3 JSON-gateway client (lariv/server/detail/etcd.hpp): an HTTP/1.1 response parser, one
// op object per call or watch, and the typed helpers over call().
#include "lariv/server/detail/etcd.hpp"

#include <asio/connect.hpp>
#include <asio/dispatch.hpp>
#include <asio/ip/address.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/write.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <stdexcept>
#include <utility>

namespace lariv::server::detail {

// ---- errors ---------------------------------------------------------------------------------

namespace {

class etcd_category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "etcd"; }
    std::string message(int ev) const override {
        switch (static_cast<etcd_errc>(ev)) {
            case etcd_errc::http_status:
                return "etcd answered an error status";
            case etcd_errc::bad_response:
                return "malformed answer from etcd";
            case etcd_errc::watch_canceled:
                return "etcd canceled the watch";
            case etcd_errc::compacted:
                return "the watch's start revision is compacted";
        }
        return "unknown etcd error";
    }
};

}  // namespace

const std::error_category& etcd_category() noexcept {
    static const etcd_category_impl c;
    return c;
}

std::error_code make_error_code(etcd_errc e) noexcept {
    return {static_cast<int>(e), etcd_category()};
}

// ---- base64 and ranges ----------------------------------------------------------------------

namespace {
constexpr std::string_view b64_alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<std::int8_t, 256> b64_table() {
    std::array<std::int8_t, 256> t{};
    for (auto& v : t) {
        v = -1;
    }
    for (std::size_t i = 0; i < b64_alphabet.size(); ++i) {
        t[static_cast<unsigned char>(b64_alphabet[i])] = static_cast<std::int8_t>(i);
    }
    return t;
}
constexpr auto b64_values = b64_table();
}  // namespace

std::string base64_encode(std::string_view in) {
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    std::size_t i = 0;
    for (; i + 3 <= in.size(); i += 3) {
        const std::uint32_t v = (std::uint32_t{static_cast<unsigned char>(in[i])} << 16) |
                                (std::uint32_t{static_cast<unsigned char>(in[i + 1])} << 8) |
                                std::uint32_t{static_cast<unsigned char>(in[i + 2])};
        out += b64_alphabet[(v >> 18) & 63];
        out += b64_alphabet[(v >> 12) & 63];
        out += b64_alphabet[(v >> 6) & 63];
        out += b64_alphabet[v & 63];
    }
    const std::size_t rest = in.size() - i;
    if (rest == 1) {
        const std::uint32_t v = std::uint32_t{static_cast<unsigned char>(in[i])} << 16;
        out += b64_alphabet[(v >> 18) & 63];
        out += b64_alphabet[(v >> 12) & 63];
        out += "==";
    } else if (rest == 2) {
        const std::uint32_t v = (std::uint32_t{static_cast<unsigned char>(in[i])} << 16) |
                                (std::uint32_t{static_cast<unsigned char>(in[i + 1])} << 8);
        out += b64_alphabet[(v >> 18) & 63];
        out += b64_alphabet[(v >> 12) & 63];
        out += b64_alphabet[(v >> 6) & 63];
        out += '=';
    }
    return out;
}

std::optional<std::string> base64_decode(std::string_view in) {
    if (in.size() % 4 != 0) {
        return std::nullopt;
    }
    std::string out;
    out.reserve(in.size() / 4 * 3);
    for (std::size_t i = 0; i < in.size(); i += 4) {
        const bool last = i + 4 == in.size();
        int pad = 0;
        std::uint32_t v = 0;
        for (std::size_t k = 0; k < 4; ++k) {
            const char c = in[i + k];
            if (c == '=') {
                // Padding: only in the last quantum, only in its last two places, and only
                // followed by more padding.
                if (!last || k < 2) {
                    return std::nullopt;
                }
                ++pad;
                v <<= 6;
                continue;
            }
            const std::int8_t d = b64_values[static_cast<unsigned char>(c)];
            if (d < 0 || pad > 0) {
                return std::nullopt;
            }
            v = (v << 6) | static_cast<std::uint32_t>(d);
        }
        out += static_cast<char>((v >> 16) & 0xff);
        if (pad < 2) {
            out += static_cast<char>((v >> 8) & 0xff);
        }
        if (pad < 1) {
            out += static_cast<char>(v & 0xff);
        }
    }
    return out;
}

std::string prefix_range_end(std::string_view prefix) {
    std::string end(prefix);
    for (std::size_t i = end.size(); i-- > 0;) {
        if (static_cast<unsigned char>(end[i]) < 0xff) {
            end[i] = static_cast<char>(static_cast<unsigned char>(end[i]) + 1);
            end.resize(i + 1);
            return end;
        }
    }
    return std::string(1, '\0');  // no upper bound (etcd's convention)
}

// ---- JSON field helpers ---------------------------------------------------------------------

namespace {

using nlohmann::json;

/// A field of the wrong type or bad base64: the answer is bad_response.
struct bad_field : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// An int64 field: a JSON string of digits (etcd) or a number; absent or null = 0.
std::int64_t i64_field(const json& obj, const char* name) {
    if (!obj.is_object()) {
        return 0;
    }
    const auto it = obj.find(name);
    if (it == obj.end() || it->is_null()) {
        return 0;
    }
    if (it->is_number_integer()) {
        return it->get<std::int64_t>();
    }
    if (it->is_string()) {
        const auto& s = it->get_ref<const std::string&>();
        std::int64_t v = 0;
        const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        if (ec == std::errc{} && p == s.data() + s.size() && !s.empty()) {
            return v;
        }
    }
    throw bad_field(std::string("etcd: field \"") + name + "\" is not a 64-bit integer");
}

bool bool_field(const json& obj, const char* name) {
    if (!obj.is_object()) {
        return false;
    }
    const auto it = obj.find(name);
    if (it == obj.end() || it->is_null()) {
        return false;
    }
    if (!it->is_boolean()) {
        throw bad_field(std::string("etcd: field \"") + name + "\" is not a boolean");
    }
    return it->get<bool>();
}

std::string string_field(const json& obj, const char* name) {
    if (!obj.is_object()) {
        return {};
    }
    const auto it = obj.find(name);
    if (it == obj.end() || it->is_null()) {
        return {};
    }
    if (!it->is_string()) {
        throw bad_field(std::string("etcd: field \"") + name + "\" is not a string");
    }
    return it->get<std::string>();
}

std::string b64_field(const json& obj, const char* name) {
    auto v = base64_decode(string_field(obj, name));
    if (!v) {
        throw bad_field(std::string("etcd: field \"") + name + "\" is not base64");
    }
    return std::move(*v);
}

/// A member object or array; absent or null gives an empty json of that kind.
const json& member(const json& obj, const char* name) {
    static const json empty_object = json::object();
    if (!obj.is_object()) {
        return empty_object;
    }
    const auto it = obj.find(name);
    if (it == obj.end() || it->is_null()) {
        return empty_object;
    }
    return *it;
}

std::vector<const json*> array_field(const json& obj, const char* name) {
    std::vector<const json*> out;
    const json& a = member(obj, name);
    if (a.is_object() && a.empty()) {
        return out;  // absent
    }
    if (!a.is_array()) {
        throw bad_field(std::string("etcd: field \"") + name + "\" is not an array");
    }
    for (const auto& e : a) {
        out.push_back(&e);
    }
    return out;
}

etcd_kv parse_kv(const json& j) {
    etcd_kv kv;
    kv.key = b64_field(j, "key");
    kv.value = b64_field(j, "value");
    kv.create_revision = i64_field(j, "create_revision");
    kv.mod_revision = i64_field(j, "mod_revision");
    kv.lease = i64_field(j, "lease");
    return kv;
}

std::int64_t header_revision(const json& j) {
    return i64_field(member(j, "header"), "revision");
}

/// etcd's error text from an error body: "error" (3.4) or "message", or the body itself.
std::string error_text(const json& j, std::string_view raw) {
    if (j.is_object()) {
        for (const char* k : {"error", "message"}) {
            const auto it = j.find(k);
            if (it != j.end() && it->is_string() && !it->get_ref<const std::string&>().empty()) {
                return it->get<std::string>();
            }
            if (it != j.end() && it->is_object()) {  // a stream error: {"error":{"message":...}}
                const auto m = it->find("message");
                if (m != it->end() && m->is_string()) {
                    return m->get<std::string>();
                }
            }
        }
    }
    std::string s(raw.substr(0, 512));
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) {
        s.pop_back();
    }
    return s;
}

bool iequals(std::string_view a, std::string_view b) {
    const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [&](char x, char y) { return lower(x) == lower(y); });
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r' || s.front() == '\n')) {
        s.remove_prefix(1);
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
        s.remove_suffix(1);
    }
    return s;
}

// ---- HTTP/1.1 response parser ---------------------------------------------------------------

/// Incremental: feed() the bytes as they come; body bytes go to a sink. Content-Length, chunked
/// (extensions and trailers ignored) and read-until-EOF bodies; 1xx answers are skipped.
class http_response_parser {
public:
    enum class result { more, done, fail };

    /// `on_body(std::string_view)` returns false to stop (the sink keeps its own reason).
    template <class OnBody>
    result feed(std::string_view in, OnBody&& on_body) {
        while (!in.empty() && state_ != state::done) {
            switch (state_) {
                case state::headers: {
                    const std::size_t from = line_.size() >= 3 ? line_.size() - 3 : 0;
                    line_.append(in.data(), in.size());
                    const auto end = line_.find("\r\n\r\n", from);
                    if (end == std::string::npos) {
                        if (line_.size() > max_header) {
                            return fail("etcd: HTTP headers too long");
                        }
                        return result::more;
                    }
                    // Put back what follows the headers.
                    const std::size_t used = end + 4 - (line_.size() - in.size());
                    in.remove_prefix(used);
                    line_.resize(end + 2);
                    if (!parse_headers()) {
                        return result::fail;
                    }
                    line_.clear();
                    break;
                }
                case state::length:
                case state::chunk_data: {
                    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, in.size()));
                    if (!on_body(in.substr(0, n))) {
                        state_ = state::failed;
                        return result::fail;
                    }
                    in.remove_prefix(n);
                    remaining_ -= n;
                    if (remaining_ == 0) {
                        state_ = state_ == state::length ? state::done : state::chunk_crlf;
                    }
                    break;
                }
                case state::until_eof:
                    if (!on_body(in)) {
                        state_ = state::failed;
                        return result::fail;
                    }
                    in = {};
                    break;
                case state::chunk_size:
                case state::chunk_crlf:
                case state::trailers: {
                    const auto nl = in.find('\n');
                    const std::size_t n = nl == std::string_view::npos ? in.size() : nl + 1;
                    line_.append(in.data(), n);
                    in.remove_prefix(n);
                    if (line_.size() > max_header) {
                        return fail("etcd: HTTP chunk framing too long");
                    }
                    if (line_.back() != '\n') {
                        break;  // need more
                    }
                    if (!line_ended()) {
                        return result::fail;
                    }
                    line_.clear();
                    break;
                }
                case state::done:
                case state::failed:
                    return state_ == state::done ? result::done : result::fail;
            }
        }
        if (state_ == state::failed) {
            return result::fail;
        }
        return state_ == state::done ? result::done : result::more;
    }

    /// The peer closed the connection: the end of an until-EOF body, else a truncated answer.
    result eof() {
        if (state_ == state::done) {
            return result::done;
        }
        if (state_ == state::until_eof) {
            state_ = state::done;
            return result::done;
        }
        return fail(state_ == state::headers && line_.empty() ? "etcd closed the connection without an answer"
                                                              : "etcd closed the connection in the middle of an answer");
    }

    [[nodiscard]] int status() const { return status_; }
    [[nodiscard]] bool headers_done() const { return headers_done_; }
    [[nodiscard]] const std::string& error() const { return error_; }

private:
    enum class state { headers, length, until_eof, chunk_size, chunk_data, chunk_crlf, trailers, done, failed };
    static constexpr std::size_t max_header = 64 * 1024;

    result fail(std::string why) {
        error_ = std::move(why);
        state_ = state::failed;
        return result::fail;
    }

    bool parse_headers() {
        // line_ holds the status line and the header lines, each ending "\r\n".
        std::string_view all(line_);
        auto next_line = [&all]() {
            const auto e = all.find("\r\n");
            const std::string_view l = all.substr(0, e);
            all.remove_prefix(e + 2);
            return l;
        };
        const std::string_view status_line = next_line();
        if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." || status_line[8] != ' ') {
            fail("etcd: not an HTTP/1.x answer");
            return false;
        }
        int code = 0;
        const auto [p, ec] = std::from_chars(status_line.data() + 9, status_line.data() + 12, code);
        if (ec != std::errc{} || p != status_line.data() + 12 || code < 100 || code > 599 ||
            (status_line.size() > 12 && status_line[12] != ' ')) {
            fail("etcd: bad HTTP status line");
            return false;
        }
        bool chunked = false;
        std::optional<std::uint64_t> length;
        while (!all.empty()) {
            const std::string_view l = next_line();
            const auto colon = l.find(':');
            if (colon == std::string_view::npos || colon == 0) {
                fail("etcd: bad HTTP header line");
                return false;
            }
            const std::string_view name = l.substr(0, colon);
            const std::string_view value = trim(l.substr(colon + 1));
            if (iequals(name, "Content-Length")) {
                std::uint64_t n = 0;
                const auto [q, e2] = std::from_chars(value.data(), value.data() + value.size(), n);
                if (e2 != std::errc{} || q != value.data() + value.size() || value.empty() ||
                    (length && *length != n)) {
                    fail("etcd: bad Content-Length");
                    return false;
                }
                length = n;
            } else if (iequals(name, "Transfer-Encoding")) {
                // chunked must be the last coding; gzip and friends are never asked for.
                const auto comma = value.rfind(',');
                const std::string_view last = trim(comma == std::string_view::npos ? value : value.substr(comma + 1));
                if (!iequals(last, "chunked")) {
                    fail("etcd: unsupported Transfer-Encoding");
                    return false;
                }
                chunked = true;
            }
        }
        if (code < 200 && code != 101) {  // 100 Continue and friends: the real answer follows
            state_ = state::headers;
            return true;
        }
        status_ = code;
        headers_done_ = true;
        if (code == 204 || code == 304) {
            state_ = state::done;
        } else if (chunked) {
            state_ = state::chunk_size;
        } else if (length) {
            remaining_ = *length;
            state_ = remaining_ == 0 ? state::done : state::length;
        } else {
            state_ = state::until_eof;
        }
        return true;
    }

    /// line_ is one complete line of chunk framing ("\n"-terminated).
    bool line_ended() {
        std::string_view l(line_);
        l.remove_suffix(1);
        if (!l.empty() && l.back() == '\r') {
            l.remove_suffix(1);
        }
        switch (state_) {
            case state::chunk_size: {
                const auto semi = l.find(';');
                const std::string_view hex = trim(l.substr(0, semi));
                std::uint64_t n = 0;
                const auto [p, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), n, 16);
                if (hex.empty() || hex.size() > 15 || ec != std::errc{} || p != hex.data() + hex.size()) {
                    fail("etcd: bad chunk size");
                    return false;
                }
                remaining_ = n;
                state_ = n == 0 ? state::trailers : state::chunk_data;
                return true;
            }
            case state::chunk_crlf:
                if (!l.empty()) {
                    fail("etcd: chunk not followed by CRLF");
                    return false;
                }
                state_ = state::chunk_size;
                return true;
            case state::trailers:
                if (l.empty()) {
                    state_ = state::done;
                }
                return true;  // trailer lines are ignored
            default:
                return true;
        }
    }

    state state_ = state::headers;
    std::string line_;
    std::uint64_t remaining_ = 0;
    int status_ = 0;
    bool headers_done_ = false;
    std::string error_;
};

}  // namespace

// ---- one call or watch ----------------------------------------------------------------------

class etcd_op : public std::enable_shared_from_this<etcd_op> {
public:
    using watch_events = std::function<void(const std::vector<etcd_event>&, std::int64_t)>;
    using watch_end = std::function<void(std::error_code)>;

    etcd_op(std::shared_ptr<etcd_client> c, std::string request)
        : client_(std::move(c)),
          strand_(asio::make_strand(client_->ex_)),
          resolver_(strand_),
          sock_(strand_),
          timer_(strand_),
          request_(std::move(request)) {}

    void set_call(etcd_client::json_handler h) { on_json_ = std::move(h); }
    void set_watch(watch_events ev, watch_end end) {
        watch_ = true;
        on_events_ = std::move(ev);
        on_end_ = std::move(end);
    }

    void start(std::chrono::milliseconds timeout) {
        asio::post(strand_, [self = shared_from_this(), timeout] { self->do_start(timeout); });
    }

    /// Thread-safe: the op completes with operation_aborted unless it already completed.
    void cancel() {
        asio::post(strand_, [self = shared_from_this()] {
            self->finish(asio::error::operation_aborted, "etcd: cancelled");
        });
    }

private:
    using tcp = asio::ip::tcp;

    void do_start(std::chrono::milliseconds timeout) {
        if (done_) {
            return;  // cancelled before it started
        }
        timer_.expires_after(timeout);
        timer_.async_wait([self = shared_from_this()](std::error_code ec) {
            if (!ec && !self->done_) {
                self->finish(asio::error::timed_out, "etcd " + self->client_->endpoint() + ": timed out");
            }
        });
        if (client_->literal_) {
            std::error_code ec;
            const auto addr = asio::ip::make_address(client_->host_, ec);
            std::uint16_t port = 0;
            std::from_chars(client_->port_.data(), client_->port_.data() + client_->port_.size(), port);
            const std::array<tcp::endpoint, 1> eps{tcp::endpoint(addr, port)};
            connect(eps);
            return;
        }
        resolver_.async_resolve(client_->host_, client_->port_,
                                [self = shared_from_this()](std::error_code ec, tcp::resolver::results_type r) {
                                    if (self->done_) {
                                        return;
                                    }
                                    if (ec) {
                                        return self->finish(ec, "etcd: resolving " + self->client_->host_ + ": " +
                                                                    ec.message());
                                    }
                                    self->connect(r);
                                });
    }

    template <class Endpoints>
    void connect(const Endpoints& eps) {
        asio::async_connect(sock_, eps, [self = shared_from_this()](std::error_code ec, const tcp::endpoint&) {
            if (self->done_) {
                return;
            }
            if (ec) {
                return self->finish(ec, "etcd " + self->client_->endpoint() + ": connect: " + ec.message());
            }
            std::error_code ignored;
            self->sock_.set_option(tcp::no_delay(true), ignored);
            if (self->watch_) {
                self->sock_.set_option(asio::socket_base::keep_alive(true), ignored);
            }
            asio::async_write(self->sock_, asio::buffer(self->request_),
                              [self](std::error_code wec, std::size_t) {
                                  if (self->done_) {
                                      return;
                                  }
                                  if (wec) {
                                      return self->finish(wec, "etcd " + self->client_->endpoint() +
                                                                   ": write: " + wec.message());
                                  }
                                  self->request_.clear();
                                  self->request_.shrink_to_fit();
                                  self->read();
                              });
        });
    }

    void read() {
        sock_.async_read_some(asio::buffer(rbuf_), [self = shared_from_this()](std::error_code ec, std::size_t n) {
            if (self->done_) {
                return;
            }
            if (n > 0) {
                self->on_bytes(std::string_view(self->rbuf_.data(), n), false);
            } else if (ec == asio::error::eof) {
                self->on_bytes({}, true);
            } else if (ec) {
                self->finish(ec, "etcd " + self->client_->endpoint() + ": read: " + ec.message());
            } else {
                self->read();
            }
        });
    }

    /// In a 200 watch stream body bytes are lines of JSON; otherwise they are collected.
    [[nodiscard]] bool streaming() const { return watch_ && parser_.status() == 200; }

    void on_bytes(std::string_view in, bool eof) {
        const bool had_headers = parser_.headers_done();
        auto r = eof ? parser_.eof() : parser_.feed(in, [this](std::string_view b) {
            std::string& dst = streaming() ? line_ : body_;
            if (!streaming() && dst.size() + b.size() > etcd_client::max_body) {
                sink_error_ = "etcd: answer body over 4 MiB";
                return false;
            }
            dst.append(b.data(), b.size());
            return true;
        });
        if (r == http_response_parser::result::fail) {
            return finish(etcd_errc::bad_response,
                          sink_error_.empty() ? parser_.error() : std::exchange(sink_error_, {}));
        }
        if (watch_ && !had_headers && parser_.headers_done() && parser_.status() == 200) {
            timer_.cancel();  // the stream is open: from here on it is unbounded
        }
        if (!streaming()) {
            if (r == http_response_parser::result::done) {
                return complete_body();
            }
            return read();
        }
        // A watch stream: deliver the complete lines, then read on once the caller has seen them.
        std::vector<std::pair<std::vector<etcd_event>, std::int64_t>> batches;
        std::error_code end;
        std::string end_text;
        std::size_t pos = 0;
        const bool finished = r == http_response_parser::result::done;
        while (!end) {
            auto nl = line_.find('\n', pos);
            if (nl == std::string::npos) {
                if (!finished || pos >= line_.size()) {
                    break;
                }
                nl = line_.size();  // the last line, without its newline
            }
            const std::string_view l = trim(std::string_view(line_).substr(pos, nl - pos));
            pos = std::min(nl + 1, line_.size());
            if (!l.empty()) {
                parse_watch_line(l, batches, end, end_text);
            }
        }
        line_.erase(0, pos);
        if (!end && line_.size() > etcd_client::max_body) {
            end = etcd_errc::bad_response;
            end_text = "etcd: watch line over 4 MiB";
        }
        if (!end && finished) {
            end = asio::error::eof;
            end_text = "etcd " + client_->endpoint() + ": the watch stream ended";
        }
        if (batches.empty()) {
            if (end) {
                return finish(end, std::move(end_text));
            }
            return read();
        }
        asio::dispatch(client_->ex_, [self = shared_from_this(), b = std::move(batches), resume = !end] {
            for (const auto& [events, rev] : b) {
                self->on_events_(events, rev);
            }
            if (resume) {
                asio::post(self->strand_, [self] {
                    if (!self->done_) {
                        self->read();
                    }
                });
            }
        });
        if (end) {
            finish(end, std::move(end_text));
        }
    }

    void parse_watch_line(std::string_view l,
                          std::vector<std::pair<std::vector<etcd_event>, std::int64_t>>& batches,
                          std::error_code& end,
                          std::string& end_text) {
        const json j = json::parse(l, nullptr, false);
        if (j.is_discarded() || !j.is_object()) {
            end = etcd_errc::bad_response;
            end_text = "etcd: a watch line is not a JSON object";
            return;
        }
        if (j.contains("error")) {
            end = etcd_errc::watch_canceled;
            end_text = "etcd: watch: " + error_text(j, l);
            return;
        }
        try {
            const json& r = member(j, "result");
            const std::int64_t compact = i64_field(r, "compact_revision");
            if (compact > 0) {
                end = etcd_errc::compacted;
                end_text = "etcd: watch: revision compacted (compact_revision " + std::to_string(compact) + ")";
                return;
            }
            if (bool_field(r, "canceled")) {
                end = etcd_errc::watch_canceled;
                const std::string why = string_field(r, "cancel_reason");
                end_text = "etcd: watch canceled" + (why.empty() ? std::string() : ": " + why);
                return;
            }
            std::vector<etcd_event> events;
            for (const json* e : array_field(r, "events")) {
                etcd_event ev;
                const std::string type = string_field(*e, "type");
                if (type == "DELETE") {
                    ev.type = etcd_event::kind::del;
                } else if (!type.empty() && type != "PUT") {
                    throw bad_field("etcd: unknown watch event type \"" + type + "\"");
                }
                ev.kv = parse_kv(member(*e, "kv"));
                events.push_back(std::move(ev));
            }
            if (!events.empty()) {
                batches.emplace_back(std::move(events), header_revision(r));
            }
        } catch (const std::exception& e) {
            end = etcd_errc::bad_response;
            end_text = e.what();
        }
    }

    void complete_body() {
        const int status = parser_.status();
        json j = json::parse(body_, nullptr, false);
        if (status != 200) {
            if (j.is_discarded()) {
                j = nullptr;
            }
            return finish(etcd_errc::http_status,
                          "etcd: HTTP " + std::to_string(status) + ": " + error_text(j, body_), std::move(j));
        }
        if (j.is_discarded() || !j.is_object()) {
            return finish(etcd_errc::bad_response, "etcd: the answer is not a JSON object");
        }
        // A 200 carrying an error: a gateway stream error or a response's own "error" field.
        const auto e = j.find("error");
        if (e != j.end() && !e->is_null() && !(e->is_string() && e->get_ref<const std::string&>().empty())) {
            return finish(etcd_errc::http_status, "etcd: " + error_text(j, body_), std::move(j));
        }
        finish({}, {}, std::move(j));
    }

    void finish(std::error_code ec, std::string text, json j = nullptr) {
        if (done_) {
            return;
        }
        done_ = true;
        std::error_code ignored;
        timer_.cancel();
        resolver_.cancel();
        sock_.shutdown(tcp::socket::shutdown_both, ignored);
        sock_.close(ignored);
        body_.clear();
        line_.clear();
        if (ec) {
            client_->set_last_error(text.empty() ? ec.message() : std::move(text));
        }
        if (watch_) {
            asio::dispatch(client_->ex_, [end = std::move(on_end_), ec] { end(ec); });
        } else {
            asio::dispatch(client_->ex_, [h = std::move(on_json_), ec, j = std::move(j)]() mutable {
                h(ec, std::move(j));
            });
        }
    }

    std::shared_ptr<etcd_client> client_;
    asio::strand<asio::any_io_executor> strand_;
    tcp::resolver resolver_;
    tcp::socket sock_;
    asio::steady_timer timer_;
    std::string request_;
    std::array<char, 16 * 1024> rbuf_{};
    http_response_parser parser_;
    std::string body_;
    std::string line_;  // a watch's partial line
    std::string sink_error_;
    bool done_ = false;
    bool watch_ = false;
    etcd_client::json_handler on_json_;
    watch_events on_events_;
    watch_end on_end_;
};

void etcd_watch::cancel() {
    if (auto op = op_.lock()) {
        op->cancel();
    }
}

// ---- the client -----------------------------------------------------------------------------

namespace {

bool valid_name(std::string_view h) {
    if (h.empty() || h.size() > 253) {
        return false;
    }
    return std::all_of(h.begin(), h.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
               c == '.' || c == '_';
    });
}

}  // namespace

std::shared_ptr<etcd_client> etcd_client::create(asio::any_io_executor ex, std::string_view endpoint) {
    return std::make_shared<etcd_client>(private_tag{}, std::move(ex), endpoint);
}

etcd_client::etcd_client(private_tag, asio::any_io_executor ex, std::string_view endpoint)
    : ex_(std::move(ex)), endpoint_(endpoint) {
    const auto bad = [&](const char* why) {
        return std::invalid_argument("etcd endpoint \"" + std::string(endpoint) + "\": " + why);
    };
    constexpr std::string_view scheme = "http://";
    if (endpoint.size() < scheme.size() || !iequals(endpoint.substr(0, scheme.size()), scheme)) {
        throw bad("only http://host:port is supported");
    }
    std::string_view rest = endpoint.substr(scheme.size());
    if (!rest.empty() && rest.back() == '/') {
        rest.remove_suffix(1);
    }
    std::string_view port;
    if (!rest.empty() && rest.front() == '[') {
        const auto close = rest.find(']');
        if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
            throw bad("expected [IPv6]:port");
        }
        host_ = std::string(rest.substr(1, close - 1));
        port = rest.substr(close + 2);
        std::error_code ec;
        (void)asio::ip::make_address_v6(host_, ec);
        if (ec) {
            throw bad("not an IPv6 address");
        }
        literal_ = true;
        host_header_ = "[" + host_ + "]";
    } else {
        const auto colon = rest.rfind(':');
        if (colon == std::string_view::npos) {
            throw bad("no port");
        }
        host_ = std::string(rest.substr(0, colon));
        port = rest.substr(colon + 1);
        std::error_code ec;
        (void)asio::ip::make_address_v4(host_, ec);
        literal_ = !ec;
        if (!literal_ && !valid_name(host_)) {
            throw bad("not a host name or IPv4 address");
        }
        host_header_ = host_;
    }
    unsigned p = 0;
    const auto [q, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (port.empty() || ec != std::errc{} || q != port.data() + port.size() || p == 0 || p > 65535) {
        throw bad("bad port");
    }
    port_ = std::string(port);
    host_header_ += ":" + port_;
}

etcd_client::~etcd_client() = default;

void etcd_client::add_op(const std::shared_ptr<etcd_op>& op) {
    const std::lock_guard lk(mu_);
    std::erase_if(ops_, [](const std::weak_ptr<etcd_op>& w) { return w.expired(); });
    ops_.push_back(op);
}

void etcd_client::set_last_error(std::string text) {
    const std::lock_guard lk(mu_);
    last_error_ = std::move(text);
}

std::string etcd_client::last_error() const {
    const std::lock_guard lk(mu_);
    return last_error_;
}

void etcd_client::cancel() {
    std::vector<std::weak_ptr<etcd_op>> ops;
    {
        const std::lock_guard lk(mu_);
        ops.swap(ops_);
    }
    for (const auto& w : ops) {
        if (auto op = w.lock()) {
            op->cancel();
        }
    }
}

namespace {

std::string make_request(std::string_view path, std::string_view host, const json& body) {
    const std::string b = body.dump();
    std::string r;
    r.reserve(160 + path.size() + b.size());
    r.append("POST ").append(path).append(" HTTP/1.1\r\nHost: ").append(host);
    r.append("\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: ");
    r.append(std::to_string(b.size()));
    r.append("\r\nConnection: close\r\n\r\n");
    r.append(b);
    return r;
}

}  // namespace

void etcd_client::call(std::string path, const nlohmann::json& body, std::chrono::milliseconds timeout,
                       json_handler h) {
    auto op = std::make_shared<etcd_op>(shared_from_this(), make_request(path, host_header_, body));
    op->set_call(std::move(h));
    add_op(op);
    op->start(timeout);
}

std::shared_ptr<etcd_watch> etcd_client::watch_prefix(
    std::string prefix,
    std::int64_t start_revision,
    std::function<void(const std::vector<etcd_event>&, std::int64_t revision)> on_events,
    std::function<void(std::error_code)> on_end) {
    json create = {{"key", base64_encode(prefix.empty() ? std::string(1, '\0') : prefix)},
                   {"range_end", base64_encode(prefix_range_end(prefix))}};
    if (start_revision > 0) {
        create["start_revision"] = std::to_string(start_revision);
    }
    auto op = std::make_shared<etcd_op>(shared_from_this(),
                                        make_request("/v3/watch", host_header_, {{"create_request", create}}));
    op->set_watch(std::move(on_events), std::move(on_end));
    add_op(op);
    op->start(watch_open_timeout);
    return std::shared_ptr<etcd_watch>(new etcd_watch(op));
}

namespace {

/// Runs `decode` over a successful answer: the text of a bad field (it becomes bad_response).
template <class Decode>
std::optional<std::string> try_decode(Decode&& decode) {
    try {
        decode();
        return std::nullopt;
    } catch (const std::exception& e) {
        return std::string(e.what());
    }
}

}  // namespace

std::error_code etcd_client::decoded(const std::optional<std::string>& failure) {
    if (!failure) {
        return {};
    }
    set_last_error(*failure);
    return etcd_errc::bad_response;
}

void etcd_client::grant(std::chrono::seconds ttl, std::function<void(std::error_code, std::int64_t)> h) {
    call("/v3/lease/grant", {{"TTL", std::to_string(ttl.count())}}, request_timeout_,
         [self = shared_from_this(), h = std::move(h)](std::error_code ec, json j) {
             std::int64_t id = 0;
             if (!ec) {
                 ec = self->decoded(try_decode([&] {
                     id = i64_field(j, "ID");
                     if (id == 0) {
                         throw bad_field("etcd: lease grant: no ID in the answer");
                     }
                 }));
             }
             h(ec, ec ? 0 : id);
         });
}

void etcd_client::put_if_absent(std::string key,
                                std::string value,
                                std::int64_t lease,
                                std::function<void(std::error_code, bool, std::optional<etcd_kv>)> h) {
    const std::string k = base64_encode(key);
    json put = {{"key", k}, {"value", base64_encode(value)}};
    if (lease != 0) {
        put["lease"] = std::to_string(lease);
    }
    const json body = {
        {"compare", json::array({{{"key", k}, {"target", "CREATE"}, {"result", "EQUAL"}, {"create_revision", "0"}}})},
        {"success", json::array({{{"request_put", put}}})},
        {"failure", json::array({{{"request_range", {{"key", k}}}}})},
    };
    call("/v3/kv/txn", body, request_timeout_, [self = shared_from_this(), h = std::move(h)](std::error_code ec, json j) {
        bool created = false;
        std::optional<etcd_kv> holder;
        if (!ec) {
            ec = self->decoded(try_decode([&] {
                created = bool_field(j, "succeeded");  // absent when false
                if (created) {
                    return;
                }
                const auto responses = array_field(j, "responses");
                if (!responses.empty()) {
                    const auto kvs = array_field(member(*responses.front(), "response_range"), "kvs");
                    if (!kvs.empty()) {
                        holder = parse_kv(*kvs.front());
                    }
                }
            }));
        }
        if (ec) {
            return h(ec, false, std::nullopt);
        }
        h(ec, created, std::move(holder));
    });
}

void etcd_client::keepalive(std::int64_t lease, std::function<void(std::error_code, std::int64_t)> h) {
    call("/v3/lease/keepalive", {{"ID", std::to_string(lease)}}, request_timeout_,
         [self = shared_from_this(), h = std::move(h)](std::error_code ec, json j) {
             std::int64_t ttl = 0;
             if (!ec) {
                 // The gateway wraps each message of a stream in "result".
                 ec = self->decoded(try_decode([&] {
                     ttl = i64_field(j.contains("result") ? member(j, "result") : j, "TTL");  // absent: gone
                 }));
             }
             h(ec, ec ? 0 : std::max<std::int64_t>(ttl, 0));
         });
}

void etcd_client::revoke(std::int64_t lease, std::function<void(std::error_code)> h) {
    call("/v3/lease/revoke", {{"ID", std::to_string(lease)}}, request_timeout_,
         [h = std::move(h)](std::error_code ec, const json&) { h(ec); });
}

void etcd_client::range_prefix(std::string prefix,
                               std::function<void(std::error_code, std::vector<etcd_kv>, std::int64_t)> h) {
    const json body = {{"key", base64_encode(prefix.empty() ? std::string(1, '\0') : prefix)},
                       {"range_end", base64_encode(prefix_range_end(prefix))}};
    call("/v3/kv/range", body, request_timeout_, [self = shared_from_this(), h = std::move(h)](std::error_code ec, json j) {
        std::vector<etcd_kv> kvs;
        std::int64_t rev = 0;
        if (!ec) {
            ec = self->decoded(try_decode([&] {
                rev = header_revision(j);
                for (const json* kv : array_field(j, "kvs")) {
                    kvs.push_back(parse_kv(*kv));
                }
            }));
        }
        if (ec) {
            return h(ec, {}, 0);
        }
        h(ec, std::move(kvs), rev);
    });
}

void etcd_client::delete_key(std::string key, std::function<void(std::error_code)> h) {
    call("/v3/kv/deleterange", {{"key", base64_encode(key)}}, request_timeout_,
         [h = std::move(h)](std::error_code ec, const json&) { h(ec); });
}

}  // namespace lariv::server::detail
