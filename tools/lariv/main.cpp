// lariv — the command-line client of the Lariv Registry, built on lariv::client.
//
// The connection's I/O runs on one background thread (an io_context); the main thread starts
// operations and waits for their callbacks with a deadline (--timeout). Exit codes (sysexits.h
// where one fits): 0 ok, 1 a negative server verdict, 64 usage error, 69 server unavailable,
// 75 timeout, 77 not authorized. `lariv bench` (bench.cpp) has its own engine: one io_context per
// client thread, no lariv::client.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <CLI/CLI.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/signal_set.hpp>

#include "bench.hpp"
#include "lariv/client/client.hpp"

namespace {

namespace proto = lariv::protocol;
namespace lc = lariv::client;
using ms = std::chrono::milliseconds;

constexpr int exit_ok = 0;
constexpr int exit_verdict = 1;
constexpr int exit_usage = 64;
constexpr int exit_unavailable = 69;
constexpr int exit_timeout = 75;
constexpr int exit_noperm = 77;

constexpr const char* exit_help =
    "Exit codes: 0 ok; 1 a negative server verdict (unknown_session, stale_session, queue_full, "
    "rate_limited, draining, ...); 64 usage error; 69 server unavailable (connect failed or "
    "refused, connection lost); 75 timeout; 77 not authorized. bench: 1 a check failed (loss, "
    "corruption, reordering, an error reply).\n"
    "Environment: LARIV_SERVER (host:port), LARIV_TOKEN, LARIV_ADMIN_TOKEN, LARIV_TLS_CA (the CA "
    "for --tls when --tls-ca is not given; it does not turn TLS on).";

struct common_options {
    std::string server = "127.0.0.1:7411";
    std::string token;
    std::string admin_token;
    std::uint32_t timeout_ms = 5000;
    bool json = false;
    bool tls = false;
    std::string tls_ca;
    std::string tls_cert;
    std::string tls_key;
    bool tls_insecure = false;
};

/// The connection's options: TLS as the --tls flags say.
lc::connection_options connection_options_for(const common_options& o) {
    lc::connection_options c;
    if (o.tls) {
        lc::tls_options t;
        t.ca_file = o.tls_ca;
        t.cert_file = o.tls_cert;
        t.key_file = o.tls_key;
        t.verify_peer = !o.tls_insecure;
        c.tls = std::move(t);
    }
    return c;
}

/// Exit code for an operation's error.
int exit_for(const std::error_code& ec, bool connecting = false) {
    if (auto c = lc::protocol_code(ec)) {
        switch (*c) {
            case proto::error_code::not_authorized: return exit_noperm;
            case proto::error_code::timeout: return exit_timeout;
            case proto::error_code::server_full:
            case proto::error_code::draining:
                return connecting ? exit_unavailable : exit_verdict;
            default: return exit_verdict;
        }
    }
    if (ec == lc::errc::bad_address) {
        return exit_usage;
    }
    if (ec == lc::errc::payload_too_large) {
        return exit_verdict;
    }
    return exit_unavailable;  // resolver, refused, reset, eof, ...
}

void print_error(const std::string& what, const std::error_code& ec) {
    std::fprintf(stderr, "lariv: %s: %s\n", what.c_str(), ec.message().c_str());
}

/// One connection with its I/O thread.
class session {
public:
    explicit session(const common_options& o)
        : opts_(o)
        , work_(asio::make_work_guard(io_))
        , conn_(io_.get_executor(), connection_options_for(o))
        , thread_([this] { io_.run(); }) {}
    ~session() {
        conn_.close();
        work_.reset();
        thread_.join();
    }
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    lc::connection& conn() { return conn_; }
    asio::io_context& io() { return io_; }
    [[nodiscard]] ms timeout() const { return ms(opts_.timeout_ms); }

    /// Starts an operation with a callback and waits for it; nullopt when --timeout passed (the
    /// connection is closed then, and the callback still runs later with operation_aborted).
    template <class... Args, class Start>
    std::optional<std::tuple<Args...>> wait(Start&& start, ms timeout) {
        auto p = std::make_shared<std::promise<std::tuple<Args...>>>();
        auto f = p->get_future();
        start([p](Args... a) { p->set_value(std::tuple<Args...>(std::move(a)...)); });
        if (f.wait_for(timeout) != std::future_status::ready) {
            conn_.close();
            return std::nullopt;
        }
        return f.get();
    }

    /// Connects and handshakes; returns 0 or the exit code (after printing why).
    int connect(bool admin, const std::string& name = "lariv") {
        lc::hello_options h;
        h.name = name;
        // HELLO carries one token: the admin token for admin commands, else the client token
        // (or the admin token, which the server also accepts, when it is the only one given).
        h.auth = admin && !opts_.admin_token.empty() ? opts_.admin_token
                 : !opts_.token.empty()              ? opts_.token
                                                     : opts_.admin_token;
        auto r = wait<std::error_code>(
            [&](auto cb) { conn_.async_connect(std::string_view(opts_.server), h, std::move(cb)); }, timeout());
        if (!r) {
            std::fprintf(stderr, "lariv: connect to %s: timed out\n", opts_.server.c_str());
            return exit_timeout;
        }
        if (auto ec = std::get<0>(*r)) {
            print_error("connect to " + opts_.server, ec);
            return exit_for(ec, true);
        }
        return exit_ok;
    }

    /// QUIT, waiting at most --timeout (frames queued before it are flushed first).
    bool quit() {
        auto r = wait<std::error_code>([&](auto cb) { conn_.async_close(std::move(cb)); }, timeout());
        return r && !std::get<0>(*r);
    }

private:
    common_options opts_;
    asio::io_context io_;
    asio::executor_work_guard<asio::io_context::executor_type> work_;
    lc::connection conn_;
    std::thread thread_;
};

std::string base64(std::string_view in) {
    static constexpr char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    std::size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        const auto n = (std::uint32_t(std::uint8_t(in[i])) << 16) | (std::uint32_t(std::uint8_t(in[i + 1])) << 8) |
                       std::uint8_t(in[i + 2]);
        out += tab[(n >> 18) & 63];
        out += tab[(n >> 12) & 63];
        out += tab[(n >> 6) & 63];
        out += tab[n & 63];
    }
    if (i < in.size()) {
        std::uint32_t n = std::uint32_t(std::uint8_t(in[i])) << 16;
        if (i + 1 < in.size()) {
            n |= std::uint32_t(std::uint8_t(in[i + 1])) << 8;
        }
        out += tab[(n >> 18) & 63];
        out += tab[(n >> 12) & 63];
        out += i + 1 < in.size() ? tab[(n >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

std::string hex(std::string_view in) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(in.size() * 2);
    for (const char c : in) {
        out += digits[std::uint8_t(c) >> 4];
        out += digits[std::uint8_t(c) & 15];
    }
    return out;
}

/// A session id argument, or nullopt after printing a usage error.
std::optional<proto::session_id> parse_id(const std::string& text) {
    auto id = proto::session_id::parse(text);
    if (!id) {
        std::fprintf(stderr, "lariv: '%s' is not a session id (32 hex digits)\n", text.c_str());
    }
    return id;
}

// ---- subcommands -------------------------------------------------------------------------------

int run_listen(const common_options& o, const std::string& name, bool as_hex) {
    session s(o);
    if (int rc = s.connect(false, name)) {
        return rc;
    }
    const std::string me = s.conn().id().to_string();
    if (o.json) {
        std::printf("{\"session\":\"%s\"}\n", me.c_str());
    } else {
        std::printf("%s\n", me.c_str());
    }
    std::fflush(stdout);

    auto done = std::make_shared<std::promise<int>>();
    auto finished = done->get_future();
    auto stopping = std::make_shared<std::atomic<bool>>(false);
    auto settled = std::make_shared<std::atomic<bool>>(false);
    auto settle = [done, settled](int rc) {
        if (!settled->exchange(true)) {
            done->set_value(rc);
        }
    };
    // Made, used and destroyed on the I/O thread's side only through posts (see the end).
    auto signals = std::make_unique<asio::signal_set>(s.io(), SIGINT, SIGTERM);
    signals->async_wait([&s, stopping, settle](std::error_code ec, int) {
        if (ec) {
            return;
        }
        stopping->store(true);
        s.conn().async_close([settle](std::error_code) { settle(exit_ok); });
    });
    // The receive loop: one async_receive at a time, on the I/O thread.
    auto loop = std::make_shared<std::function<void()>>();
    *loop = [&s, o, as_hex, stopping, settle, weak = std::weak_ptr<std::function<void()>>(loop)] {
        s.conn().async_receive([o, as_hex, stopping, settle, weak](std::error_code ec, lc::message m) {
            if (ec) {
                if (stopping->load()) {
                    settle(exit_ok);
                } else {
                    print_error("connection closed", ec);
                    settle(exit_for(ec));
                }
                return;
            }
            const std::string from = m.from.to_string();
            if (o.json) {
                const nlohmann::json j{{"from", from}, {"payload_base64", base64(m.payload)}};
                std::printf("%s\n", j.dump().c_str());
            } else if (as_hex) {
                std::printf("%s %s\n", from.c_str(), hex(m.payload).c_str());
            } else {
                std::printf("%s ", from.c_str());
                std::fwrite(m.payload.data(), 1, m.payload.size(), stdout);
                std::printf("\n");
            }
            std::fflush(stdout);
            if (auto next = weak.lock()) {
                (*next)();
            }
        });
    };
    asio::post(s.io(), [loop] { (*loop)(); });
    const int rc = finished.get();
    // Tear down on the I/O thread and wait for it: nothing it runs may outlive this frame.
    std::promise<void> cleaned;
    asio::post(s.io(), [&signals, &cleaned, loop] {
        signals.reset();  // cancels the wait
        *loop = nullptr;
        cleaned.set_value();
    });
    cleaned.get_future().wait();
    return rc;
}

int run_send(const common_options& o, const std::string& to_text, const std::string& data, bool ack,
             unsigned count, unsigned interval_ms) {
    auto to = parse_id(to_text);
    if (!to) {
        return exit_usage;
    }
    std::string payload;
    if (data == "-") {
        payload.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    } else if (!data.empty() && data[0] == '@') {
        std::ifstream in(data.substr(1), std::ios::binary);
        if (!in) {
            std::fprintf(stderr, "lariv: cannot read %s\n", data.c_str() + 1);
            return exit_usage;
        }
        payload.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    } else {
        payload = data;
    }
    session s(o);
    if (int rc = s.connect(false)) {
        return rc;
    }
    // Start every send (pipelined, or paced by --interval), then collect the verdicts in order.
    std::vector<std::future<std::error_code>> verdicts;
    verdicts.reserve(count);
    for (unsigned i = 0; i < count; ++i) {
        auto p = std::make_shared<std::promise<std::error_code>>();
        verdicts.push_back(p->get_future());
        auto cb = [p](std::error_code ec) { p->set_value(ec); };
        if (ack) {
            s.conn().async_send_acked(*to, payload, cb);
        } else {
            s.conn().async_send(*to, payload, cb);
        }
        if (interval_ms != 0 && i + 1 < count) {
            std::this_thread::sleep_for(ms(interval_ms));
        }
    }
    int rc = exit_ok;
    const auto deadline = std::chrono::steady_clock::now() + s.timeout();
    for (unsigned i = 0; i < count; ++i) {
        if (verdicts[i].wait_until(deadline) != std::future_status::ready) {
            std::fprintf(stderr, "lariv: send: timed out\n");
            return exit_timeout;
        }
        const std::error_code ec = verdicts[i].get();
        if (ec && !lc::protocol_code(ec)) {
            print_error("send", ec);
            return exit_for(ec);
        }
        if (ack) {
            const std::string verdict = ec ? ec.message() : "ok";
            if (o.json) {
                std::printf("%s\n", nlohmann::json{{"seq", i}, {"verdict", verdict}}.dump().c_str());
            } else {
                std::printf("%s\n", verdict.c_str());
            }
        }
        if (ec && rc == exit_ok) {
            rc = exit_for(ec);
        }
    }
    std::fflush(stdout);
    // QUIT: the server answers it after every SEND before it, so async_send's verdicts are in.
    if (!s.quit()) {
        std::fprintf(stderr, "lariv: send: the server did not confirm QUIT\n");
    }
    if (!ack && s.conn().send_failures() != 0) {
        std::fprintf(stderr, "lariv: send: %llu of %u sends refused by the server (--ack shows why)\n",
                     static_cast<unsigned long long>(s.conn().send_failures()), count);
        rc = exit_verdict;
    }
    return rc;
}

void print_session(const proto::session_info& i) {
    std::printf("%s name=%s age_ms=%llu queued_bytes=%llu msgs_in=%llu msgs_out=%llu\n",
                i.id.to_string().c_str(), nlohmann::json(i.name).dump().c_str(),
                static_cast<unsigned long long>(i.age_ms), static_cast<unsigned long long>(i.queued_bytes),
                static_cast<unsigned long long>(i.msgs_in), static_cast<unsigned long long>(i.msgs_out));
}

int run_info(const common_options& o, const std::string& id_text) {
    auto id = parse_id(id_text);
    if (!id) {
        return exit_usage;
    }
    session s(o);
    if (int rc = s.connect(false)) {
        return rc;
    }
    auto r = s.wait<std::error_code, proto::session_info>(
        [&](auto cb) { s.conn().async_info(*id, std::move(cb)); }, s.timeout());
    if (!r) {
        std::fprintf(stderr, "lariv: info: timed out\n");
        return exit_timeout;
    }
    auto& [ec, info] = *r;
    if (ec) {
        print_error("info", ec);
        return exit_for(ec);
    }
    std::printf("%s\n", o.json ? nlohmann::json(info).dump().c_str() : nlohmann::json(info).dump(2).c_str());
    s.quit();
    return exit_ok;
}

int run_list(const common_options& o, bool all, const std::string& prefix, std::uint32_t limit) {
    session s(o);
    if (int rc = s.connect(true)) {
        return rc;
    }
    nlohmann::json out = nlohmann::json::array();
    std::optional<proto::session_id> after;
    for (;;) {
        auto r = s.wait<std::error_code, proto::list_page>(
            [&](auto cb) { s.conn().async_list(after, limit, std::move(cb)); }, s.timeout());
        if (!r) {
            std::fprintf(stderr, "lariv: list: timed out\n");
            return exit_timeout;
        }
        auto& [ec, page] = *r;
        if (ec) {
            print_error("list", ec);
            return exit_for(ec);
        }
        for (const auto& i : page.sessions) {
            if (i.name.compare(0, prefix.size(), prefix) != 0) {
                continue;
            }
            if (o.json) {
                out.push_back(i);
            } else {
                print_session(i);
            }
        }
        if (!page.next) {
            break;
        }
        if (!all) {
            std::fprintf(stderr, "lariv: list: more sessions after %s (use --all)\n",
                         page.next->to_string().c_str());
            break;
        }
        after = page.next;  // the server's cursor: each session shows at most once
    }
    if (o.json) {
        std::printf("%s\n", out.dump().c_str());
    }
    s.quit();
    return exit_ok;
}

int run_kick(const common_options& o, const std::string& id_text) {
    auto id = parse_id(id_text);
    if (!id) {
        return exit_usage;
    }
    session s(o);
    if (int rc = s.connect(true)) {
        return rc;
    }
    auto r = s.wait<std::error_code>([&](auto cb) { s.conn().async_kick(*id, std::move(cb)); }, s.timeout());
    if (!r) {
        std::fprintf(stderr, "lariv: kick: timed out\n");
        return exit_timeout;
    }
    const std::error_code ec = std::get<0>(*r);
    if (ec && !lc::protocol_code(ec)) {
        print_error("kick", ec);
        return exit_for(ec);
    }
    const std::string verdict = ec ? ec.message() : "ok";
    std::printf("%s\n", o.json ? nlohmann::json{{"verdict", verdict}}.dump().c_str() : verdict.c_str());
    s.quit();
    return ec ? exit_for(ec) : exit_ok;
}

int run_stats(const common_options& o) {
    session s(o);
    if (int rc = s.connect(false)) {
        return rc;
    }
    auto r = s.wait<std::error_code, nlohmann::json>([&](auto cb) { s.conn().async_stats(std::move(cb)); },
                                                     s.timeout());
    if (!r) {
        std::fprintf(stderr, "lariv: stats: timed out\n");
        return exit_timeout;
    }
    auto& [ec, j] = *r;
    if (ec) {
        print_error("stats", ec);
        return exit_for(ec);
    }
    std::printf("%s\n", o.json ? j.dump().c_str() : j.dump(2).c_str());
    s.quit();
    return exit_ok;
}

/// One GET against larivd's monitoring endpoint (HTTP/1.0, one request per connection, as the
/// monitor answers). Returns the status and body, or nullopt with `why` set.
std::optional<std::pair<int, std::string>> http_get(const std::string& monitor, const std::string& target,
                                                    std::uint32_t timeout_ms, std::string& why) {
    const auto colon = monitor.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == monitor.size()) {
        why = "--monitor must be host:port";
        return std::nullopt;
    }
    asio::ip::tcp::iostream http;
    http.expires_after(ms(timeout_ms));
    http.connect(monitor.substr(0, colon), monitor.substr(colon + 1));
    if (!http) {
        why = "cannot connect to the monitor at " + monitor + ": " + http.error().message();
        return std::nullopt;
    }
    http << "GET " << target << " HTTP/1.0\r\nHost: " << monitor << "\r\n\r\n" << std::flush;
    std::string version;
    int status = 0;
    http >> version >> status;
    std::string line;
    std::getline(http, line);
    while (std::getline(http, line) && line != "\r" && !line.empty()) {
    }
    std::string body((std::istreambuf_iterator<char>(http)), std::istreambuf_iterator<char>());
    if (status == 0) {
        why = "no HTTP answer from the monitor at " + monitor +
              (http.error() ? ": " + http.error().message() : std::string());
        return std::nullopt;
    }
    return std::make_pair(status, std::move(body));
}

/// `lariv server`: the monitoring endpoints, pretty-printed (health, identity, load, key counters,
/// the busiest sessions) or, with --json, one object {healthz, varz, connz}.
int run_server(const common_options& o, const std::string& monitor, unsigned top) {
    std::string why;
    const auto health = http_get(monitor, "/healthz", o.timeout_ms, why);
    if (!health) {
        std::fprintf(stderr, "lariv: server: %s\n", why.c_str());
        return exit_unavailable;
    }
    const auto varz = http_get(monitor, "/varz", o.timeout_ms, why);
    const auto connz = http_get(monitor, "/connz?sort=msgs_out&limit=" + std::to_string(top), o.timeout_ms, why);
    if (!varz || !connz || varz->first != 200 || connz->first != 200) {
        std::fprintf(stderr, "lariv: server: %s\n",
                     why.empty() ? "the monitor did not answer /varz and /connz" : why.c_str());
        return exit_unavailable;
    }
    const auto v = nlohmann::json::parse(varz->second, nullptr, false);
    const auto c = nlohmann::json::parse(connz->second, nullptr, false);
    if (v.is_discarded() || c.is_discarded()) {
        std::fprintf(stderr, "lariv: server: the monitor's answer is not JSON\n");
        return exit_unavailable;
    }
    std::string h = health->second;
    while (!h.empty() && (h.back() == '\n' || h.back() == '\r')) {
        h.pop_back();
    }
    if (o.json) {
        std::printf("%s\n", nlohmann::json{{"healthz", {{"status", health->first}, {"body", h}}},
                                           {"varz", v},
                                           {"connz", c}}
                                 .dump()
                                 .c_str());
        return health->first == 200 ? exit_ok : exit_unavailable;
    }
    const auto& t = v["totals"];
    auto num = [](const nlohmann::json& j, const char* k) {
        return j.contains(k) ? j[k].dump() : std::string("?");
    };
    std::printf("health     %s (HTTP %d)\n", h.c_str(), health->first);
    std::printf("server     %s %s (%s), node %s, boot epoch %s\n", v.value("server", "?").c_str(),
                v.value("version", "?").c_str(), v.value("revision", "?").c_str(), num(v, "node_id").c_str(),
                num(v, "boot_epoch").c_str());
    std::printf("up         %.0f s since %s\n", v.value("uptime_s", 0.0), v.value("start", "?").c_str());
    std::printf("process    cpu %.2f s (%.2f%% avg), rss %.1f MiB, fds %s of %s\n", v.value("cpu_seconds", 0.0),
                v.value("cpu_percent_avg", 0.0), v.value("rss_bytes", 0.0) / 1048576.0, num(v, "open_fds").c_str(),
                num(v, "max_fds").c_str());
    std::printf("sessions   %s live, %s connections, max %s\n", num(v, "sessions").c_str(),
                num(v, "connections").c_str(), num(v["limits"], "max_sessions").c_str());
    std::printf("traffic    %s in, %s routed, %s bytes, %s send errors, %s queue drops\n",
                num(t, "msgs_in").c_str(), num(t, "msgs_out").c_str(), num(t, "bytes_routed").c_str(),
                num(t, "send_errors").c_str(), num(t, "queue_drops").c_str());
    std::printf("admission  %s accepted, %s handshakes, %s refused (full), %s auth failures\n",
                num(t, "accepted").c_str(), num(t, "handshakes").c_str(), num(t, "refused_full").c_str(),
                num(t, "auth_failures").c_str());
    const auto& list = c["sessions"];
    std::printf("top %zu by messages out:\n", list.size());
    if (!list.empty()) {
        std::printf("  %-32s  %-16s  %-21s  %10s  %10s  %8s\n", "id", "name", "remote", "msgs_out", "msgs_in",
                    "queued");
    }
    for (const auto& e : list) {
        std::printf("  %-32s  %-16.16s  %-21.21s  %10s  %10s  %8s\n", e.value("id", "?").c_str(),
                    e.value("name", "").c_str(), e.value("remote", "").c_str(), num(e, "msgs_out").c_str(),
                    num(e, "msgs_in").c_str(), num(e, "queued_bytes").c_str());
    }
    return health->first == 200 ? exit_ok : exit_unavailable;
}

int run_ping(const common_options& o, unsigned count, unsigned interval_ms) {
    session s(o);
    if (int rc = s.connect(false)) {
        return rc;
    }
    double min_ms = 0;
    double max_ms = 0;
    double sum_ms = 0;
    for (unsigned i = 1; i <= count; ++i) {
        auto r = s.wait<std::error_code, std::chrono::nanoseconds>(
            [&](auto cb) { s.conn().async_ping(std::move(cb)); }, s.timeout());
        if (!r) {
            std::fprintf(stderr, "lariv: ping: timed out\n");
            return exit_timeout;
        }
        auto& [ec, rtt] = *r;
        if (ec) {
            print_error("ping", ec);
            return exit_for(ec);
        }
        const double t = std::chrono::duration<double, std::milli>(rtt).count();
        min_ms = i == 1 ? t : std::min(min_ms, t);
        max_ms = std::max(max_ms, t);
        sum_ms += t;
        if (o.json) {
            std::printf("%s\n", nlohmann::json{{"seq", i}, {"rtt_ms", t}}.dump().c_str());
        } else {
            std::printf("PONG from %s: seq=%u time=%.3f ms\n", o.server.c_str(), i, t);
        }
        std::fflush(stdout);
        if (i < count && interval_ms != 0) {
            std::this_thread::sleep_for(ms(interval_ms));
        }
    }
    if (!o.json) {
        std::printf("%u pings, %u pongs, rtt min/avg/max = %.3f/%.3f/%.3f ms\n", count, count, min_ms,
                    sum_ms / count, max_ms);
    }
    s.quit();
    return exit_ok;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"lariv: the Lariv Registry command-line client", "lariv"};
    app.set_version_flag("-V,--version", std::string("lariv ") + LARIV_VERSION);
    app.footer(exit_help);
    app.require_subcommand(1);
    app.fallthrough();  // the common options may also follow the subcommand
    common_options o;
    app.add_option("-s,--server", o.server, "Server address host:port")
        ->envname("LARIV_SERVER")
        ->capture_default_str();
    app.add_option("--token", o.token, "Auth token (the server's auth_token)")->envname("LARIV_TOKEN");
    app.add_option("--admin-token", o.admin_token, "Admin token, sent as auth for list and kick")
        ->envname("LARIV_ADMIN_TOKEN");
    app.add_option("--timeout", o.timeout_ms, "How long to wait for the server, in ms")
        ->check(CLI::Range(1U, 3600U * 1000U))
        ->capture_default_str();
    app.add_flag("--json", o.json, "Output JSON (one document or one object per line) for scripts");
    app.add_flag("--tls", o.tls, "Connect over TLS (larivd's TLS listener, port 7413 by default)");
    auto* tls_ca = app.add_option("--tls-ca", o.tls_ca,
                                  "PEM CA bundle to verify the server with (implies --tls; default: "
                                  "$LARIV_TLS_CA, else the system's CAs)");
    auto* tls_cert = app.add_option("--tls-cert", o.tls_cert,
                                    "PEM client certificate, for a server that requires one (mTLS; implies --tls)");
    auto* tls_key = app.add_option("--tls-key", o.tls_key, "PEM private key of --tls-cert (default: in that file)");
    app.add_flag("--tls-insecure", o.tls_insecure,
                 "Do not verify the server's certificate at all (testing only; implies --tls)");

    std::string name = "lariv";
    bool as_hex = false;
    auto* listen = app.add_subcommand("listen", "Print this session's id, then every message to it until SIGINT/SIGTERM");
    listen->add_option("--name", name, "Name shown by INFO and LIST")->capture_default_str();
    listen->add_flag("--hex", as_hex, "Print payloads in hex");

    std::string target;
    std::string data;
    bool ack = false;
    unsigned count = 1;
    unsigned interval = 0;
    auto* send = app.add_subcommand("send", "Send a message: text, @file or - (stdin)");
    send->add_option("id", target, "Target session id")->required();
    send->add_option("data", data, "Payload: text, @file or - for stdin")->required();
    send->add_flag("--ack", ack, "Wait for each ACK and print the verdict; exit 0 only if all are ok");
    send->add_option("--count", count, "Send it this many times")->check(CLI::Range(1U, 100000000U))->capture_default_str();
    send->add_option("--interval", interval, "Pause between sends, in ms")->capture_default_str();

    std::string info_id;
    auto* info = app.add_subcommand("info", "Describe a session");
    info->add_option("id", info_id, "Session id")->required();

    bool all = false;
    std::string prefix;
    std::uint32_t limit = 0;
    auto* list = app.add_subcommand("list", "List live sessions (admin)");
    list->add_flag("--all", all, "Follow the next cursor through every page");
    list->add_option("--name", prefix, "Only sessions whose name starts with this");
    list->add_option("--limit", limit, "Page size (0: the server's default)");

    std::string kick_id;
    auto* kick = app.add_subcommand("kick", "Close a session (admin)");
    kick->add_option("id", kick_id, "Session id")->required();

    auto* stats = app.add_subcommand("stats", "Print the server's counters");

    unsigned ping_count = 4;
    unsigned ping_interval = 1000;
    auto* ping = app.add_subcommand("ping", "Round-trip times to the server");
    ping->add_option("--count", ping_count, "Pings to send")->check(CLI::Range(1U, 1000000U))->capture_default_str();
    ping->add_option("--interval", ping_interval, "Pause between pings, in ms")->capture_default_str();

    std::string monitor = "127.0.0.1:7412";
    unsigned top = 10;
    auto* server = app.add_subcommand("server", "The server's monitoring endpoints, pretty-printed: "
                                                "health, identity, load, counters, the busiest sessions");
    server->add_option("--monitor", monitor, "larivd's monitoring address host:port")
        ->envname("LARIV_MONITOR")
        ->capture_default_str();
    server->add_option("--top", top, "Busiest sessions to show")->check(CLI::Range(1U, 10000U))->capture_default_str();

    lariv::tools::bench_options bench_opts;
    auto* bench = app.add_subcommand(
        "bench", "Load tool: churn | route | rate | idle against larivd (or nats-server, --protocol nats)");
    lariv::tools::add_bench_options(*bench, bench_opts);

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        app.exit(e);
        return exit_usage;
    }
    // The TLS flags imply --tls; LARIV_TLS_CA only fills in the CA once TLS is on (larivd reads the
    // same variable as its client CA, so it must not switch a plaintext client to TLS).
    o.tls = o.tls || tls_ca->count() > 0 || tls_cert->count() > 0 || tls_key->count() > 0 || o.tls_insecure;
    if (o.tls && o.tls_ca.empty()) {
        if (const char* env = std::getenv("LARIV_TLS_CA"); env != nullptr && *env != '\0') {
            o.tls_ca = env;
        }
    }
    if (o.tls_insecure) {
        std::fprintf(stderr, "lariv: warning: --tls-insecure: the server's certificate is not verified, "
                             "anyone on the path can impersonate it\n");
    }
    // A broken pipe (| head) must end the tool quietly, not kill it mid-write with a signal.
    std::signal(SIGPIPE, SIG_IGN);
    if (*listen) {
        return run_listen(o, name, as_hex);
    }
    if (*send) {
        return run_send(o, target, data, ack, count, interval);
    }
    if (*info) {
        return run_info(o, info_id);
    }
    if (*list) {
        return run_list(o, all, prefix, limit);
    }
    if (*kick) {
        return run_kick(o, kick_id);
    }
    if (*stats) {
        return run_stats(o);
    }
    if (*ping) {
        return run_ping(o, ping_count, ping_interval);
    }
    if (*server) {
        return run_server(o, monitor, top);
    }
    if (*bench) {
        if (o.tls) {
            std::fprintf(stderr, "lariv: bench speaks plaintext only (no --tls)\n");
            return exit_usage;
        }
        bench_opts.server = o.server;
        bench_opts.server_given = app.get_option("--server")->count() > 0;
        bench_opts.timeout_ms = o.timeout_ms;
        bench_opts.json = o.json;
        return lariv::tools::run_bench(std::move(bench_opts));
    }
    return exit_usage;
}
