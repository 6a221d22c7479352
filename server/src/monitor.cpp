#include "lariv/server/monitor.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <charconv>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string_view>

#include <asio/connect.hpp>
#include <asio/io_context.hpp>
#include <asio/read.hpp>
#include <asio/read_until.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/streambuf.hpp>
#include <asio/bind_executor.hpp>
#include <asio/write.hpp>

#include "lariv/server/listener.hpp"
#include "lariv/server/session.hpp"

#ifndef LARIV_REVISION
#define LARIV_REVISION "unknown"
#endif
#ifndef LARIV_VERSION
#define LARIV_VERSION "unknown"
#endif

namespace lariv::server {

namespace {

constexpr std::size_t max_request = 8192;

/// A bad request: handle() answers 400 with the message as a text/plain body.
struct bad_request : std::runtime_error {
    using std::runtime_error::runtime_error;
};

using query_params = std::map<std::string, std::string, std::less<>>;

/// Percent-decodes `s`: "%XX" (two hex digits, either case) is that byte and, with
/// `plus_is_space` (query keys and values, application/x-www-form-urlencoded), '+' is a space.
/// Throws bad_request on a malformed escape ("%zz", "%4", a trailing "%").
std::string percent_decode(std::string_view s, bool plus_is_space) {
    auto hex = [](char c) {
        return c >= '0' && c <= '9'   ? c - '0'
               : c >= 'a' && c <= 'f' ? c - 'a' + 10
               : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                      : -1;
    };
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%') {
            const int hi = i + 1 < s.size() ? hex(s[i + 1]) : -1;
            const int lo = i + 2 < s.size() ? hex(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                throw bad_request("malformed percent-escape '" + std::string(s.substr(i, 3)) +
                                  "': '%' must be followed by two hex digits");
            }
            out.push_back(static_cast<char>(hi * 16 + lo));
            i += 2;
        } else {
            out.push_back(plus_is_space && s[i] == '+' ? ' ' : s[i]);
        }
    }
    return out;
}

/// Splits a query string at '&' and '=', then percent-decodes each key and value ("k" alone is
/// k=""; empty pieces, as in "a&&b", are skipped). Throws bad_request on a malformed escape or
/// a key given twice.
query_params parse_query(std::string_view q) {
    query_params out;
    while (!q.empty()) {
        const std::string_view kv = q.substr(0, q.find('&'));
        q.remove_prefix(std::min(q.size(), kv.size() + 1));
        if (kv.empty()) {
            continue;
        }
        const std::size_t eq = kv.find('=');
        std::string key = percent_decode(kv.substr(0, eq), true);
        std::string value =
            eq == std::string_view::npos ? "" : percent_decode(kv.substr(eq + 1), true);
        if (!out.emplace(key, std::move(value)).second) {
            throw bad_request("parameter '" + key + "' given twice");
        }
    }
    return out;
}

/// Throws bad_request naming the first parameter of `q` that `path` does not take.
void allow_only(const query_params& q,
                std::string_view path,
                std::initializer_list<std::string_view> allowed) {
    for (const auto& [key, value] : q) {
        if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
            std::string takes;
            for (const std::string_view a : allowed) {
                takes += (takes.empty() ? " takes " : ", ") + std::string(a);
            }
            throw bad_request("unknown parameter '" + key + "': " + std::string(path) +
                              (takes.empty() ? " takes no parameters" : takes));
        }
    }
}

/// The one parser of numeric query parameters: `key`'s value in `q` (`absent` when not given) as
/// a decimal number in lo..hi. ASCII digits only: no sign, space or trailing text, not empty, no
/// overflow. Throws bad_request naming the parameter and its range otherwise.
std::uint64_t number_param(const query_params& q,
                           std::string_view key,
                           std::uint64_t lo,
                           std::uint64_t hi,
                           std::uint64_t absent) {
    const auto it = q.find(key);
    if (it == q.end()) {
        return absent;
    }
    const std::string& s = it->second;
    std::uint64_t v = 0;
    const bool digits =
        !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits || std::from_chars(s.data(), s.data() + s.size(), v).ec != std::errc() || v < lo ||
        v > hi) {
        throw bad_request(std::string(key) + " must be an integer in " + std::to_string(lo) + ".." +
                          std::to_string(hi));
    }
    return v;
}

/// A double as Prometheus reads it: the shortest text that round-trips (never "1.79614e+09").
template <class T>
std::string num(T v) {
    if constexpr (std::is_floating_point_v<T>) {
        char buf[32];
        const auto r = std::to_chars(buf, buf + sizeof buf, v);
        return std::string(buf, r.ptr);
    } else {
        return std::to_string(v);
    }
}

template <class T>
void metric(std::ostringstream& o, const char* name, const char* type, const char* help, T v) {
    o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n'
      << name << ' ' << num(v) << '\n';
}

/// A Prometheus histogram (cumulative buckets in seconds, _sum, _count) from a striped one.
void histogram(std::ostringstream& o, const char* name, const char* help,
               const detail::latency_histogram& h) {
    const auto snap = h.snapshot();
    o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " histogram\n";
    std::uint64_t cumulative = 0;
    for (std::size_t b = 0; b < detail::latency_histogram::bounds; ++b) {
        cumulative += snap.buckets[b];
        o << name << "_bucket{le=\"" << num(static_cast<double>(detail::latency_histogram::bound_ns[b]) / 1e9)
          << "\"} " << cumulative << '\n';
    }
    cumulative += snap.buckets[detail::latency_histogram::bounds];
    o << name << "_bucket{le=\"+Inf\"} " << cumulative << '\n'
      << name << "_sum " << num(static_cast<double>(snap.sum_ns) / 1e9) << '\n'
      << name << "_count " << cumulative << '\n';
}

/// What the process costs, from /proc/self (Linux) and getrusage/getrlimit.
struct process_figures {
    double cpu_seconds = 0;        ///< user + system
    std::uint64_t rss_bytes = 0;   ///< resident set
    std::uint64_t vm_bytes = 0;    ///< virtual size
    std::uint64_t open_fds = 0;
    std::uint64_t max_fds = 0;     ///< RLIMIT_NOFILE soft limit
    double start_time = 0;         ///< Unix time, seconds
};

process_figures read_process() {
    process_figures p;
    rusage ru{};
    if (::getrusage(RUSAGE_SELF, &ru) == 0) {
        p.cpu_seconds = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                        static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    }
    const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    if (std::ifstream statm("/proc/self/statm"); statm) {
        std::uint64_t size = 0;
        std::uint64_t resident = 0;
        statm >> size >> resident;
        p.vm_bytes = size * page;
        p.rss_bytes = resident * page;
    }
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        ++p.open_fds;
    }
    if (p.open_fds > 0) {
        --p.open_fds;  // the iterator's own descriptor
    }
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        p.max_fds = rl.rlim_cur;
    }
    // Start: /proc/self/stat field 22 (clock ticks since boot) + /proc/stat's btime.
    std::uint64_t btime = 0;
    if (std::ifstream st("/proc/stat"); st) {
        std::string key;
        while (st >> key) {
            if (key == "btime") {
                st >> btime;
                break;
            }
            st.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
        }
    }
    if (std::ifstream self("/proc/self/stat"); self && btime != 0) {
        std::string line;
        std::getline(self, line);
        // The command name (field 2) may hold spaces: count fields after its closing ')'.
        std::istringstream rest(line.substr(line.rfind(')') + 2));
        std::string field;
        for (int f = 3; f <= 22 && rest >> field; ++f) {
            if (f == 22) {
                p.start_time = static_cast<double>(btime) +
                               static_cast<double>(std::stoull(field)) /
                                   static_cast<double>(::sysconf(_SC_CLK_TCK));
            }
        }
    }
    return p;
}

std::string iso_time(std::int64_t unix_ms) {
    const std::time_t t = unix_ms / 1000;
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buf[40];
    const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    return std::string(buf, n) + '.' + std::to_string(1000 + unix_ms % 1000).substr(1) + 'Z';
}

std::int64_t unix_ms_now() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

/// A /connz entry: INFO's fields and the transport's (remote, bytes, idle time, round trip).
nlohmann::json conn_json(const protocol::session_info& i, const std::string& remote,
                         const session_base::connection_stats& c, bool host) {
    nlohmann::json j = i;
    j["kind"] = host ? "host" : "lariv";
    j["remote"] = remote;
    if (!host) {
        j["bytes_in"] = c.bytes_in;
        j["bytes_out"] = c.bytes_out;
        j["idle_ms"] = c.idle_ms;
        j["rtt_us"] = c.rtt_us >= 0 ? nlohmann::json(c.rtt_us) : nlohmann::json(nullptr);
    }
    return j;
}

}  // namespace

/// One HTTP exchange: read the request head, answer, close. Counted in the monitor's
/// connection count while it lives.
class http_conn : public std::enable_shared_from_this<http_conn> {
public:
    http_conn(asio::ip::tcp::socket s, registry& reg, std::shared_ptr<monitor::conn_count> count,
              std::shared_ptr<const nlohmann::json> config, const cluster* cl)
        : strand_(asio::make_strand(s.get_executor()))
        , socket_(std::move(s))
        , timer_(strand_)
        , reg_(reg)
        , count_(std::move(count))
        , config_(std::move(config))
        , cluster_(cl)
        , buf_(max_request) {}
    ~http_conn() { count_->open.fetch_sub(1, std::memory_order_relaxed); }
    http_conn(const http_conn&) = delete;
    http_conn& operator=(const http_conn&) = delete;

    void start(bool over_cap) {
        timer_.expires_after(std::chrono::seconds(5));
        timer_.async_wait(asio::bind_executor(strand_, [self = shared_from_this()](std::error_code ec) {
            if (!ec) {
                std::error_code e;
                self->socket_.close(e);
            }
        }));
        if (over_cap) {
            // Too many monitor connections: answer at once, without reading the request.
            respond({503, "text/plain", "too many monitor connections\n"});
            return;
        }
        asio::async_read_until(socket_, buf_, "\r\n\r\n",
                               asio::bind_executor(strand_, [self = shared_from_this()](std::error_code ec, std::size_t) {
                                   self->on_request(ec);
                               }));
    }
    /// Closes the connection (monitor::stop): its handlers then run as no-ops.
    void close() {
        asio::post(strand_, [self = shared_from_this()] {
            self->stopped_ = true;
            std::error_code e;
            self->socket_.close(e);
            self->timer_.cancel();
        });
    }

private:
    void on_request(std::error_code ec) {
        monitor::response r;
        bool head = false;
        if (stopped_) {
            return;
        }
        if (ec) {
            if (ec != asio::error::not_found) {  // not_found: the request head was too large
                timer_.cancel();
                return;
            }
            r = {431, "text/plain", "request too large\n"};
        } else {
            std::istream in(&buf_);
            std::string method;
            std::string target;
            in >> method >> target;
            head = method == "HEAD";
            if (method != "GET" && !head) {
                r = {405, "text/plain", "only GET and HEAD\n"};
            } else {
                r = monitor::handle(reg_, target, *config_, cluster_);
            }
        }
        respond(r, head);
    }
    /// Writes `r` and closes. A HEAD answer has the GET's status and headers, Content-Length
    /// included, and no body.
    void respond(const monitor::response& r, bool head = false) {
        static const std::map<int, const char*> reasons = {
            {200, "OK"}, {400, "Bad Request"}, {404, "Not Found"}, {405, "Method Not Allowed"},
            {431, "Request Header Fields Too Large"}, {503, "Service Unavailable"}};
        const auto it = reasons.find(r.status);
        out_ = "HTTP/1.1 " + std::to_string(r.status) + ' ' +
               (it != reasons.end() ? it->second : "Error") + "\r\nContent-Type: " +
               r.content_type + "\r\nContent-Length: " + std::to_string(r.body.size()) +
               "\r\nConnection: close\r\n\r\n";
        if (!head) {
            out_ += r.body;
        }
        asio::async_write(socket_, asio::buffer(out_),
                          asio::bind_executor(strand_, [self = shared_from_this()](std::error_code, std::size_t) {
                              std::error_code e;
                              self->socket_.shutdown(asio::ip::tcp::socket::shutdown_both, e);
                              self->socket_.close(e);
                              self->timer_.cancel();
                          }));
    }

    asio::strand<asio::any_io_executor> strand_;  // the socket, the timer and close() meet here
    asio::ip::tcp::socket socket_;
    asio::steady_timer timer_;
    registry& reg_;
    std::shared_ptr<monitor::conn_count> count_;
    std::shared_ptr<const nlohmann::json> config_;
    const cluster* cluster_;  // null on a single node; outlives the monitor (server's order)
    asio::streambuf buf_;
    std::string out_;
    bool stopped_ = false;
};

monitor::monitor(asio::any_io_executor ex, const asio::ip::tcp::endpoint& ep, registry& reg,
                 std::size_t max_connections)
    : ex_(ex)
    , reg_(reg)
    , count_(std::make_shared<conn_count>())
    , config_(std::make_shared<const nlohmann::json>())
    , max_connections_(max_connections) {
    listener_ = std::make_shared<listener>(
        ex, ep,
        [this](asio::ip::tcp::socket s) {
            // Taken here, on the listener's strand; given back by ~http_conn.
            const bool over = count_->open.fetch_add(1, std::memory_order_relaxed) >= max_connections_;
            if (over) {
                count_->refused.fetch_add(1, std::memory_order_relaxed);
            }
            auto c = std::make_shared<http_conn>(std::move(s), reg_, count_, config_, cluster_);
            {
                std::lock_guard lk(conns_mu_);
                std::erase_if(conns_, [](const std::weak_ptr<http_conn>& w) { return w.expired(); });
                conns_.push_back(c);
            }
            c->start(over);
        },
        listener::options{.name = "monitor", .socket_executor = {}});
}

monitor::~monitor() = default;

void monitor::start() { listener_->start(); }
void monitor::stop() {
    listener_->stop();
    std::lock_guard lk(conns_mu_);
    for (auto& w : conns_) {
        if (auto c = w.lock()) {
            c->close();
        }
    }
    conns_.clear();
}
std::uint16_t monitor::port() const noexcept { return listener_->port(); }
asio::ip::tcp::endpoint monitor::endpoint() const noexcept { return listener_->endpoint(); }

namespace {

/// monitor::handle's routing; throws bad_request for a malformed request.
monitor::response answer(registry& reg, std::string_view target, const nlohmann::json& config,
                         const cluster* cl) {
    const std::size_t q = target.find('?');
    const std::string path = percent_decode(target.substr(0, q), false);
    const auto query = parse_query(q == std::string_view::npos ? "" : target.substr(q + 1));
    if (path == "/healthz") {
        allow_only(query, path, {"format"});
        if (auto f = query.find("format"); f != query.end()) {
            if (f->second != "json") {
                throw bad_request("format takes json");
            }
            // The node's own state; a cluster member whose etcd lease is lost still serves its
            // local sessions (200) and says so in "cluster".
            nlohmann::json j = {{"status", reg.draining() ? "draining" : "ok"},
                                {"cluster", cl != nullptr ? cl->health() : nlohmann::json(nullptr)}};
            return {reg.draining() ? 503 : 200, "application/json", j.dump() + "\n"};
        }
        if (reg.draining()) {
            return {503, "text/plain", "draining\n"};
        }
        return {200, "text/plain", "ok\n"};
    }
    if (path == "/metrics") {
        allow_only(query, path, {});
        const registry_stats& s = reg.stats();
        std::ostringstream o;
        metric(o, "lariv_sessions_open", "gauge", "Sessions registered now.", reg.size());
        metric(o, "lariv_sessions_accepted_total", "counter", "Connections accepted.", s.accepted.load());
        metric(o, "lariv_sessions_refused_total", "counter", "Connections refused at max_sessions.",
               s.refused_full.load());
        metric(o, "lariv_sessions_refused_per_ip_total", "counter",
               "Connections refused at max_sessions_per_ip.", s.refused_per_ip.load());
        metric(o, "lariv_handshakes_total", "counter", "Successful HELLOs.", s.handshakes.load());
        metric(o, "lariv_auth_failures_total", "counter", "HELLOs refused for their auth token.",
               s.auth_failures.load());
        o << "# HELP lariv_sessions_closed_total Sessions closed, by reason.\n"
             "# TYPE lariv_sessions_closed_total counter\n";
        for (std::size_t r = 0; r < close_reason_count; ++r) {
            o << "lariv_sessions_closed_total{reason=\"" << to_string(static_cast<close_reason>(r))
              << "\"} " << s.closed[r].load() << '\n';
        }
        metric(o, "lariv_messages_in_total", "counter", "SENDs accepted for routing.", s.msgs_in.load());
        metric(o, "lariv_messages_routed_total", "counter", "MSGs queued to target sessions.",
               s.msgs_out.load());
        metric(o, "lariv_bytes_routed_total", "counter", "Payload bytes routed.", s.bytes_routed.load());
        metric(o, "lariv_send_errors_total", "counter", "SENDs answered with an error.",
               s.send_errors.load());
        metric(o, "lariv_queue_drops_total", "counter", "Messages dropped at a full queue.",
               s.queue_drops.load());
        metric(o, "lariv_protocol_errors_total", "counter", "Error replies to bad input.",
               s.protocol_errors.load());
        metric(o, "lariv_rate_limited_total", "counter", "SENDs refused by the rate limit.",
               s.rate_limited.load());
        metric(o, "lariv_accept_errors_total", "counter", "Failed accept calls.", s.accept_errors.load());
        metric(o, "lariv_tls_handshakes_total", "counter", "TLS handshakes completed.",
               s.tls_handshakes.load());
        metric(o, "lariv_tls_handshake_failures_total", "counter",
               "TLS handshakes failed or timed out.", s.tls_handshake_failures.load());
        metric(o, "lariv_queued_bytes", "gauge", "Bytes waiting in outbound queues.",
               reg.queued_bytes_total());
        metric(o, "lariv_registry_buffers", "gauge", "Lariv buffers linked.", reg.lariv_buffers());
        metric(o, "lariv_registry_capacity", "gauge", "Lariv slots in all buffers.", reg.lariv_capacity());
        metric(o, "lariv_draining", "gauge", "1 while draining.", reg.draining() ? 1 : 0);
        histogram(o, "lariv_handshake_duration_seconds", "Accept to HELLO accepted.",
                  s.handshake_latency);
        histogram(o, "lariv_route_latency_seconds",
                  "SEND decoded to its MSG queued at the target (one SEND in 16 per session).",
                  s.route_latency);
        histogram(o, "lariv_write_duration_seconds", "One socket write, start to completion.",
                  s.write_latency);
        o << "# HELP lariv_build_info The running build.\n# TYPE lariv_build_info gauge\n"
          << "lariv_build_info{version=\"" << LARIV_VERSION << "\",revision=\"" << LARIV_REVISION
          << "\"} 1\n";
        const process_figures p = read_process();
        metric(o, "process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.",
               p.cpu_seconds);
        metric(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", p.rss_bytes);
        metric(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", p.vm_bytes);
        metric(o, "process_open_fds", "gauge", "Number of open file descriptors.", p.open_fds);
        metric(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.", p.max_fds);
        metric(o, "process_start_time_seconds", "gauge",
               "Start time of the process since unix epoch in seconds.", p.start_time);
        if (cl != nullptr) {
            cl->write_metrics(o);
        }
        return {200, "text/plain; version=0.0.4", o.str()};
    }
    if (path == "/connz") {
        allow_only(query, path, {"limit", "after", "sort", "offset", "name", "state"});
        std::uint64_t limit = number_param(query, "limit", 1, 10000, 100);
        const std::uint64_t offset =
            number_param(query, "offset", 0, std::numeric_limits<std::uint32_t>::max(), 0);
        const bool sorted = query.contains("sort");
        std::string state = "open";
        if (auto st = query.find("state"); st != query.end()) {
            state = st->second;
            if (state != "open" && state != "closed") {
                throw bad_request("state must be open or closed");
            }
        }
        const bool closed = state == "closed";
        if (query.contains("offset") && !sorted && !closed) {
            throw bad_request("offset applies only with sort= or state=closed; page the slot order with after=");
        }
        if (query.contains("after") && (sorted || closed)) {
            throw bad_request("after applies only to open sessions without sort=; page with offset=");
        }
        // name=<text>: only sessions whose HELLO name contains the text (as nats-server's
        // /connz filters); the filter applies to every form.
        std::string want;
        if (auto nm = query.find("name"); nm != query.end()) {
            want = nm->second;
        }
        auto name_ok = [&](const std::string& n) { return want.empty() || n.find(want) != std::string::npos; };
        nlohmann::json j;
        j["now_sessions"] = reg.size();
        j["state"] = state;
        if (closed) {
            if (auto srt = query.find("sort"); srt != query.end()) {
                throw bad_request("state=closed lists the newest first; it takes no sort=");
            }
            const auto& ring = reg.recently_closed();
            nlohmann::json arr = nlohmann::json::array();
            std::uint64_t total = 0;
            for (const detail::closed_session& c : ring.snapshot()) {
                if (!name_ok(c.info.name)) {
                    continue;
                }
                if (total++ < offset || arr.size() >= limit) {
                    continue;
                }
                nlohmann::json e = conn_json(c.info, c.remote, c.conn, c.host);
                e["reason"] = to_string(c.reason);
                e["duration_ms"] = c.info.age_ms;
                e["closed_at"] = iso_time(c.closed_at_ms);
                arr.push_back(std::move(e));
            }
            j["total"] = total;
            j["offset"] = offset;
            j["kept"] = ring.capacity();
            j["closed_total"] = ring.total();
            j["sessions"] = std::move(arr);
        } else if (auto srt = query.find("sort"); srt != query.end()) {
            const std::string key = srt->second;
            static constexpr std::array<std::string_view, 7> keys{
                "age", "msgs_in", "msgs_out", "queued", "bytes_in", "bytes_out", "idle"};
            if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
                throw bad_request("sort must be age, msgs_in, msgs_out, queued, bytes_in, bytes_out or idle");
            }
            struct row {
                nlohmann::json j;
                std::uint64_t v;
            };
            std::vector<row> all;
            reg.for_each([&](session_base& s) {
                if (!s.routable()) {
                    return true;
                }
                const protocol::session_info i = s.info();
                if (name_ok(i.name)) {
                    const session_base::connection_stats c = s.connection();
                    const std::uint64_t v =
                        key == "age"        ? i.age_ms
                        : key == "msgs_in"  ? i.msgs_in
                        : key == "msgs_out" ? i.msgs_out
                        : key == "queued"   ? i.queued_bytes
                        : key == "bytes_in" ? c.bytes_in
                        : key == "bytes_out"
                            ? c.bytes_out
                            : static_cast<std::uint64_t>(std::max<std::int64_t>(c.idle_ms, 0));
                    all.push_back({conn_json(i, s.remote(), c, s.is_host()), v});
                }
                return true;
            });
            std::stable_sort(all.begin(), all.end(), [](const row& a, const row& b) { return a.v > b.v; });
            nlohmann::json arr = nlohmann::json::array();
            for (std::size_t k = offset; k < all.size() && arr.size() < limit; ++k) {
                arr.push_back(std::move(all[k].j));
            }
            j["total"] = all.size();
            j["offset"] = offset;
            j["sort"] = key;
            j["sessions"] = std::move(arr);
        } else {
            std::optional<protocol::session_id> after;
            if (auto a = query.find("after"); a != query.end()) {
                after = protocol::session_id::parse(a->second);
                if (!after) {
                    throw bad_request("after must be a session id (32 hex digits)");
                }
            }
            std::function<bool(const session_base&)> keep;
            if (!want.empty()) {
                keep = [&](const session_base& s) { return name_ok(s.info().name); };
            }
            // Report the limit actually applied (the registry caps a page at max_list).
            limit = reg.page_limit(static_cast<std::uint32_t>(limit));
            const auto page = reg.list(after, static_cast<std::uint32_t>(limit), keep);
            nlohmann::json arr = nlohmann::json::array();
            for (const protocol::session_info& i : page.sessions) {
                // The transport's figures; a session that closed since the page was taken shows
                // its INFO fields only.
                if (auto s = reg.find(i.id)) {
                    arr.push_back(conn_json(i, s->remote(), s->connection(), s->is_host()));
                } else {
                    arr.push_back(i);
                }
            }
            j["sessions"] = std::move(arr);
            j["next"] = page.next ? nlohmann::json(page.next->to_string()) : nlohmann::json(nullptr);
        }
        j["limit"] = limit;
        return {200, "application/json", j.dump() + "\n"};
    }
    if (path == "/varz") {
        allow_only(query, path, {});
        const process_figures p = read_process();
        const std::int64_t now = unix_ms_now();
        const registry_options& o = reg.options();
        nlohmann::json j;
        j["server"] = "larivd";
        j["version"] = LARIV_VERSION;
        j["revision"] = LARIV_REVISION;
        j["node_id"] = reg.node_id();
        j["boot_epoch"] = reg.boot_epoch();
        j["start"] = iso_time(static_cast<std::int64_t>(p.start_time * 1000));
        j["now"] = iso_time(now);
        const double uptime = std::max(0.0, static_cast<double>(now) / 1000.0 - p.start_time);
        j["uptime_s"] = uptime;
        j["sessions"] = reg.size();
        j["connections"] = reg.open_connections();
        j["draining"] = reg.draining();
        j["cpu_seconds"] = p.cpu_seconds;
        j["cpu_percent_avg"] = uptime > 0 ? 100.0 * p.cpu_seconds / uptime : 0.0;
        j["rss_bytes"] = p.rss_bytes;
        j["vm_bytes"] = p.vm_bytes;
        j["open_fds"] = p.open_fds;
        j["max_fds"] = p.max_fds;
        j["limits"] = {{"max_sessions", o.max_sessions},
                       {"max_sessions_per_ip", o.max_sessions_per_ip},
                       {"max_queue_bytes", reg.hot().max_queue_bytes.load()},
                       {"rate_limit", reg.hot().rate_limit.load()},
                       {"rate_burst", reg.hot().rate_burst.load()},
                       {"idle_timeout_ms", reg.hot().idle_timeout_ms.load()},
                       {"protocol", o.limits}};
        j["auth"] = {{"client", !o.auth_token.empty()}, {"admin", !o.admin_token.empty()}};
        j["totals"] = reg.stats_json();
        j["closed_total"] = reg.recently_closed().total();
        j["config"] = config;  // larivd's, secrets redacted (null for an embedded registry)
        j["cluster"] = cl != nullptr ? cl->health() : nlohmann::json(nullptr);
        return {200, "application/json", j.dump() + "\n"};
    }
    if (path == "/routez") {
        allow_only(query, path, {});
        if (cl == nullptr) {
            return {404, "text/plain", "no cluster: this node runs alone (start larivd with --cluster-etcd)\n"};
        }
        return {200, "application/json", cl->routez().dump() + "\n"};
    }
    return {404, "text/plain", "not found; try /healthz, /varz, /metrics, /connz, /routez\n"};
}

}  // namespace

monitor::response monitor::handle(registry& reg, const std::string& target, const nlohmann::json& config,
                                   const cluster* cl) {
    try {
        return answer(reg, target, config, cl);
    } catch (const bad_request& e) {
        return {400, "text/plain", std::string(e.what()) + "\n"};
    }
}

bool probe_health(const config& cfg) {
    if (cfg.monitor_port == 0) {
        return false;
    }
    asio::io_context io;
    std::string host = cfg.monitor_address == "0.0.0.0" ? "127.0.0.1" : cfg.monitor_address;
    if (host == "::") {
        host = "::1";
    }
    asio::ip::tcp::socket sock(io);
    std::string response;
    bool ok = false;
    asio::steady_timer timer(io, std::chrono::seconds(2));
    timer.async_wait([&](std::error_code ec) {
        if (!ec) {
            std::error_code e;
            sock.close(e);
        }
    });
    asio::ip::address addr;
    try {
        addr = resolve_endpoint("monitor_address", host, cfg.monitor_port).address();
    } catch (const config_error&) {
        return false;
    }
    const std::string req = "GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n";
    sock.async_connect({addr, cfg.monitor_port}, [&](std::error_code e1) {
        if (e1) {
            timer.cancel();
            return;
        }
        asio::async_write(sock, asio::buffer(req), [&](std::error_code e2, std::size_t) {
            if (e2) {
                timer.cancel();
                return;
            }
            asio::async_read(sock, asio::dynamic_buffer(response, 4096),
                             [&](std::error_code, std::size_t) {
                                 ok = response.rfind("HTTP/1.1 200", 0) == 0;
                                 timer.cancel();
                             });
        });
    });
    io.run();
    return ok;
}

}  // namespace lariv::server
