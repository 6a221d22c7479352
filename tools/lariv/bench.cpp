// `lariv bench`: the load tool. See bench.hpp for the modes and README.md ("lariv bench") for the
// flags and figures.
//
// Engine. One asio::io_context per client thread, each run by its own thread; every connection
// lives on one of them (a pair's sender and receiver on the same one, so the in-flight bound is a
// plain counter). Per connection: one read buffer, reused; double-buffered writes (frames are
// appended to `out` while `writing` is in flight, then the two swap); TCP_NODELAY; the completion
// handlers' memory comes from two fixed slots in the connection (bind_allocator), so the steady
// state allocates nothing per message or per I/O operation (`heap_fallbacks` in --json counts the
// handler allocations that did not fit a slot). Lariv frames are decoded by lariv::protocol's
// reply_decoder and SEND headers written by its encoder; NATS has a small reader here.
//
// Checks. Every routed payload carries its sequence number at both ends (and, in rate mode, the
// send time), with a per-pair filler between; the receiver checks sender/subject, size, order
// and content of every message, and the sender every ACK. A loss, duplicate, reordering, corrupt
// payload or error reply fails the run with exit status 1.
#include "bench.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include <CLI/CLI.hpp>
#include <asio/bind_allocator.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>
#include <nlohmann/json.hpp>

#include "lariv/protocol/decoder.hpp"
#include "lariv/protocol/encoder.hpp"
#include "lariv/protocol/error.hpp"
#include "lariv/protocol/json.hpp"
#include "lariv/protocol/message.hpp"
#include "lariv/protocol/session_id.hpp"

namespace lariv::tools {
namespace {

namespace proto = lariv::protocol;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

constexpr int exit_ok = 0;
constexpr int exit_check = 1;
constexpr int exit_usage = 64;
constexpr int exit_unavailable = 69;

enum class bench_mode : std::uint8_t { churn, route, rate, idle };
enum class phase : int { setup = 0, warmup = 1, measure = 2, drain = 3 };

std::uint64_t now_ns() {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch()).count());
}

// ------------------------------------------------------------------------------- histogram

/// Log-linear histogram of nanosecond values, HdrHistogram's layout with 2048 sub-buckets
/// (3 significant digits: a value is reported within 0.1%), up to 2^42 ns (73 minutes; larger
/// values are clamped). Recording is an index computation and an increment; no allocation.
class histogram {
public:
    static constexpr unsigned sub_bits = 11;
    static constexpr std::uint64_t half = std::uint64_t{1} << (sub_bits - 1);
    static constexpr unsigned max_msb = 41;
    static constexpr std::uint64_t max_value = (std::uint64_t{1} << (max_msb + 1)) - 1;
    static constexpr std::size_t buckets = (max_msb - (sub_bits - 1) + 2) * half;

    histogram() : counts_(buckets, 0) {}

    void record(std::uint64_t v) noexcept {
        v = std::min(v, max_value);
        ++counts_[index(v)];
        ++total_;
        sum_ += static_cast<double>(v);
        sumsq_ += static_cast<double>(v) * static_cast<double>(v);
        max_ = std::max(max_, v);
        min_ = std::min(min_, v);
    }
    void merge(const histogram& o) {
        for (std::size_t i = 0; i < buckets; ++i) {
            counts_[i] += o.counts_[i];
        }
        total_ += o.total_;
        sum_ += o.sum_;
        sumsq_ += o.sumsq_;
        max_ = std::max(max_, o.max_);
        min_ = std::min(min_, o.min_);
    }
    [[nodiscard]] std::uint64_t count() const noexcept { return total_; }
    [[nodiscard]] std::uint64_t max() const noexcept { return total_ == 0 ? 0 : max_; }
    [[nodiscard]] double mean() const noexcept { return total_ == 0 ? 0.0 : sum_ / static_cast<double>(total_); }
    [[nodiscard]] double stddev() const noexcept {
        if (total_ == 0) {
            return 0.0;
        }
        const double m = mean();
        return std::sqrt(std::max(0.0, sumsq_ / static_cast<double>(total_) - m * m));
    }
    /// The value at percentile `p` (0..100): the highest value equivalent to the bucket that
    /// holds the ceil(p% of count)-th smallest sample, as HdrHistogram reports it (never above max).
    [[nodiscard]] std::uint64_t value_at(double p) const noexcept {
        if (total_ == 0) {
            return 0;
        }
        if (p >= 100.0) {
            return max_;
        }
        const auto want = std::max<std::uint64_t>(
            1, static_cast<std::uint64_t>(std::ceil(p / 100.0 * static_cast<double>(total_))));
        std::uint64_t cum = 0;
        for (std::size_t i = 0; i < buckets; ++i) {
            cum += counts_[i];
            if (cum >= want) {
                return std::min(highest(i), max_);
            }
        }
        return max_;
    }
    /// Samples <= the bucket of `v`.
    [[nodiscard]] std::uint64_t count_upto(std::uint64_t v) const noexcept {
        const std::size_t last = index(std::min(v, max_value));
        std::uint64_t cum = 0;
        for (std::size_t i = 0; i <= last; ++i) {
            cum += counts_[i];
        }
        return cum;
    }

    /// HdrHistogram's percentile distribution text (outputPercentileDistribution, 5 ticks per
    /// half distance), values in microseconds.
    void write_percentiles(std::FILE* f) const {
        std::fprintf(f, "%12s %14s %10s %14s\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
        if (total_ != 0) {
            double p = 0.0;
            for (;;) {
                const std::uint64_t v = value_at(p);
                const std::uint64_t cum = count_upto(v);
                if (cum >= total_ || p >= 100.0) {
                    std::fprintf(f, "%12.3f %2.12f %10" PRIu64 "\n", static_cast<double>(max_) / 1000.0, 1.0,
                                 total_);
                    break;
                }
                std::fprintf(f, "%12.3f %2.12f %10" PRIu64 " %14.2f\n", static_cast<double>(v) / 1000.0,
                             p / 100.0, cum, 1.0 / (1.0 - p / 100.0));
                const double half_distance = std::pow(2.0, std::floor(std::log2(100.0 / (100.0 - p))) + 1.0);
                p += 100.0 / (5.0 * half_distance);
            }
        }
        std::fprintf(f, "#[Mean    = %12.3f, StdDeviation   = %12.3f]\n", mean() / 1000.0, stddev() / 1000.0);
        std::fprintf(f, "#[Max     = %12.3f, Total count    = %12" PRIu64 "]\n", static_cast<double>(max()) / 1000.0,
                     total_);
        std::fprintf(f, "#[Buckets = %12u, SubBuckets     = %12u]\n", max_msb - (sub_bits - 1) + 1,
                     static_cast<unsigned>(2 * half));
    }

private:
    static std::size_t index(std::uint64_t v) noexcept {
        if (v < 2 * half) {
            return static_cast<std::size_t>(v);
        }
        const unsigned msb = 63U - static_cast<unsigned>(__builtin_clzll(v));
        const unsigned shift = msb - (sub_bits - 1);
        return static_cast<std::size_t>(shift * half + (v >> shift));
    }
    static std::uint64_t highest(std::size_t i) noexcept {
        if (i < 2 * half) {
            return i;
        }
        const std::uint64_t shift = i / half - 1;
        const std::uint64_t m = i - shift * half;
        return (m << shift) + (std::uint64_t{1} << shift) - 1;
    }

    std::vector<std::uint64_t> counts_;
    std::uint64_t total_ = 0;
    double sum_ = 0;
    double sumsq_ = 0;
    std::uint64_t max_ = 0;
    std::uint64_t min_ = std::numeric_limits<std::uint64_t>::max();
};

// ------------------------------------------------------------------------------- failures

std::mutex g_fail_mu;
std::atomic<bool> g_failed{false};
int g_fail_code = exit_ok;
std::string g_fail_msg;

void fail(int code, const std::string& msg) {
    const std::lock_guard lock(g_fail_mu);
    if (!g_failed.exchange(true)) {
        g_fail_code = code;
        g_fail_msg = msg;
    }
}

std::atomic<std::uint64_t> g_heap_fallbacks{0};

// ------------------------------------------------------------------------------- handler memory

/// Memory for one outstanding completion handler at a time (a connection has at most one read
/// or connect, one write and, for the rate timer, one wait in flight). Larger or concurrent
/// requests fall back to the heap and are counted.
class handler_slot {
public:
    void* allocate(std::size_t n) {
        if (!used_ && n <= sizeof storage_) {
            used_ = true;
            return storage_;
        }
        g_heap_fallbacks.fetch_add(1, std::memory_order_relaxed);
        return ::operator new(n);
    }
    void deallocate(void* p) noexcept {
        if (p == storage_) {
            used_ = false;
        } else {
            ::operator delete(p);
        }
    }

private:
    alignas(std::max_align_t) unsigned char storage_[384];
    bool used_ = false;
};

template <class T>
class slot_allocator {
public:
    using value_type = T;
    explicit slot_allocator(handler_slot& s) noexcept : slot_(&s) {}
    template <class U>
    slot_allocator(const slot_allocator<U>& other) noexcept : slot_(other.slot_) {}  // NOLINT
    T* allocate(std::size_t n) { return static_cast<T*>(slot_->allocate(sizeof(T) * n)); }
    void deallocate(T* p, std::size_t) noexcept { slot_->deallocate(p); }
    template <class U>
    friend bool operator==(const slot_allocator& a, const slot_allocator<U>& b) noexcept {
        return a.slot_ == b.slot_;
    }
    template <class U>
    friend bool operator!=(const slot_allocator& a, const slot_allocator<U>& b) noexcept {
        return a.slot_ != b.slot_;
    }

    handler_slot* slot_;
};

template <class F>
auto in_slot(handler_slot& s, F&& f) {
    return asio::bind_allocator(slot_allocator<int>(s), std::forward<F>(f));
}

// ------------------------------------------------------------------------------- NATS reader

/// One frame from a nats-server.
struct nats_frame {
    enum class kind : std::uint8_t { msg, ping, pong, ok, err, info };
    kind what = kind::ok;
    std::string_view subject;  // msg
    std::string_view sid;      // msg
    std::string_view payload;  // msg
    std::string_view line;     // err, info: the whole line
};

std::optional<std::size_t> parse_count(std::string_view s) {
    if (s.empty() || s.size() > 12) {
        return std::nullopt;
    }
    std::size_t v = 0;
    for (const char ch : s) {
        if (ch < '0' || ch > '9') {
            return std::nullopt;
        }
        v = v * 10 + static_cast<std::size_t>(ch - '0');
    }
    return v;
}

/// Splits the NATS server protocol (INFO, MSG with its payload, PING, PONG, +OK, -ERR) into
/// frames. Views are valid during the callback; a frame split across reads is carried over in
/// one reused buffer.
class nats_reader {
public:
    static constexpr std::size_t max_line = 64U * 1024U;
    static constexpr std::size_t max_payload = 64U * 1024U * 1024U;

    void reset() {
        carry_.clear();
        error_.clear();
    }
    [[nodiscard]] const std::string& error() const noexcept { return error_; }

    /// Calls on(frame) for each complete frame; stops (and returns false) when on() returns
    /// false or a frame is malformed (error() says why then).
    template <class F>
    bool feed(std::string_view data, F&& on) {
        std::string_view in = data;
        const bool carried = !carry_.empty();
        if (carried) {
            carry_.append(data);
            in = carry_;
        }
        std::size_t pos = 0;
        bool ok = true;
        while (pos < in.size()) {
            const std::size_t nl = in.find('\n', pos);
            if (nl == std::string_view::npos) {
                if (in.size() - pos > max_line) {
                    error_ = "a line from the server is longer than 64 KiB";
                    ok = false;
                }
                break;
            }
            std::string_view line = in.substr(pos, nl - pos);
            if (!line.empty() && line.back() == '\r') {
                line.remove_suffix(1);
            }
            std::size_t next = nl + 1;
            nats_frame f;
            f.line = line;
            if (line.starts_with("MSG ")) {
                // MSG <subject> <sid> [reply-to] <#bytes>
                std::array<std::string_view, 5> args{};
                std::size_t n = 0;
                std::string_view rest = line.substr(4);
                while (!rest.empty() && n < args.size()) {
                    const std::size_t b = rest.find_first_not_of(" \t");
                    if (b == std::string_view::npos) {
                        break;
                    }
                    rest.remove_prefix(b);
                    const std::size_t e = std::min(rest.find_first_of(" \t"), rest.size());
                    args[n++] = rest.substr(0, e);
                    rest.remove_prefix(e);
                }
                const auto len = n == 3 || n == 4 ? parse_count(args[n - 1]) : std::nullopt;
                if (!len || *len > max_payload) {
                    error_ = "bad MSG line: " + std::string(line);
                    ok = false;
                    break;
                }
                if (in.size() - next < *len + 2) {
                    break;  // the payload is not all here yet
                }
                if (in.substr(next + *len, 2) != "\r\n") {
                    error_ = "MSG payload not followed by CRLF";
                    ok = false;
                    break;
                }
                f.what = nats_frame::kind::msg;
                f.subject = args[0];
                f.sid = args[1];
                f.payload = in.substr(next, *len);
                next += *len + 2;
            } else if (line == "PING") {
                f.what = nats_frame::kind::ping;
            } else if (line == "PONG") {
                f.what = nats_frame::kind::pong;
            } else if (line == "+OK") {
                f.what = nats_frame::kind::ok;
            } else if (line.starts_with("-ERR")) {
                f.what = nats_frame::kind::err;
            } else if (line.starts_with("INFO")) {
                f.what = nats_frame::kind::info;
            } else if (line.empty()) {
                pos = next;
                continue;
            } else {
                error_ = "unknown frame from the server: " + std::string(line.substr(0, 80));
                ok = false;
                break;
            }
            pos = next;
            if (!on(f)) {
                ok = false;
                break;
            }
        }
        if (carried) {
            carry_.erase(0, pos);
        } else {
            carry_.assign(in.substr(pos));
        }
        return ok;
    }

private:
    std::string carry_;
    std::string error_;
};

// ------------------------------------------------------------------------------- connections

enum class role : std::uint8_t { churn, idle, rx, tx };

struct pair_state;

struct conn {
    conn(asio::io_context& io, std::size_t rbuf_size) : sock(io), rbuf(rbuf_size) {}

    tcp::socket sock;
    std::vector<char> rbuf;
    proto::reply_decoder dec;
    nats_reader nats;
    std::string out;       // frames appended while `writing` is in flight
    std::string writing;   // the buffer of the async_write in flight
    bool write_busy = false;
    bool ready = false;      // handshake done (and, for a NATS receiver, its SUB in place)
    bool info_seen = false;  // NATS: INFO read, CONNECT sent
    bool done = false;       // churn: the handshake completed; close and start the next
    std::uint32_t gen = 0;   // bumped at every (re)connect: older handlers are ignored
    role what = role::idle;
    pair_state* pair = nullptr;
    proto::session_id id{};
    clock_type::time_point started{};
    handler_slot read_slot;
    handler_slot write_slot;
};

constexpr std::size_t token_digits = 16;  // ack token: the sequence number in 16 hex digits

void put_token(char* out, std::uint64_t seq) {
    static constexpr char hex[] = "0123456789abcdef";
    for (std::size_t i = token_digits; i-- > 0;) {
        out[i] = hex[seq & 0xf];
        seq >>= 4;
    }
}

std::optional<std::uint64_t> parse_token(std::string_view t) {
    if (t.size() != token_digits) {
        return std::nullopt;
    }
    std::uint64_t v = 0;
    for (const char ch : t) {
        unsigned d = 0;
        if (ch >= '0' && ch <= '9') {
            d = static_cast<unsigned>(ch - '0');
        } else if (ch >= 'a' && ch <= 'f') {
            d = static_cast<unsigned>(ch - 'a' + 10);
        } else {
            return std::nullopt;
        }
        v = (v << 4) | d;
    }
    return v;
}

/// One sender/receiver pair and its verification state; touched by its client thread only.
struct pair_state {
    unsigned index = 0;
    conn* rx = nullptr;  // owned by the worker
    conn* tx = nullptr;
    int ready = 0;           // connections handshaken (2: the pair runs)
    std::string subject;     // NATS: the receiver's subject
    std::string frame;       // one SEND/PUB frame; sequence number, time and token patched in
    std::size_t payload_off = 0;
    std::size_t token_off = 0;
    std::size_t head = 8;      // payload: [seq 8][send time 8, rate mode] filler [seq 8]
    std::size_t tail_off = 0;  // offset of the trailing sequence number; 0 = none
    std::string filler;
    std::uint64_t cap_msgs = 1;  // in-flight bound, in messages
    std::uint64_t next_seq = 0;  // messages generated
    std::uint64_t recv_seq = 0;  // received and checked (= the next expected)
    std::uint64_t ack_low = 0;   // every seq below is acknowledged
    std::vector<std::uint8_t> acked;
};

// ------------------------------------------------------------------------------- shared state

struct shared_state {
    bench_options o;
    bench_mode mode = bench_mode::route;
    bool nats = false;
    tcp::endpoint ep;
    tcp::endpoint ep2;          // --server2: the receivers' server (another node of a cluster)
    bool has_ep2 = false;
    std::string hello_frame;    // lariv HELLO
    std::string connect_frame;  // NATS CONNECT (the PING follows it)
    std::atomic<int> ph{static_cast<int>(phase::setup)};
    std::uint64_t total_pairs = 0;
    std::string run_tag;  // NATS subjects: unique per run

    [[nodiscard]] phase current() const noexcept { return static_cast<phase>(ph.load(std::memory_order_relaxed)); }
};

std::string who(const conn& c) {
    switch (c.what) {
        case role::churn: return "churn session";
        case role::idle: return "idle session";
        case role::rx: return "pair " + std::to_string(c.pair->index) + " receiver";
        case role::tx: return "pair " + std::to_string(c.pair->index) + " sender";
    }
    return "session";
}

// ------------------------------------------------------------------------------- a client thread

class worker {
public:
    worker(shared_state& s, unsigned index) : s_(s), index_(index), work_(asio::make_work_guard(io_)) {}
    worker(const worker&) = delete;
    worker& operator=(const worker&) = delete;

    asio::io_context& io() { return io_; }
    void run() {
        thread_ = std::thread([this] { io_.run(); });
    }
    /// Closes everything on the worker's thread, lets run() return and joins it.
    void shutdown() {
        asio::post(io_, [this] {
            stopping_ = true;
            std::error_code ignore;
            timer_.cancel();
            for (auto& c : conns_) {
                c->sock.close(ignore);
            }
        });
        work_.reset();
        if (thread_.joinable()) {
            thread_.join();
        }
    }

    // Set up before run().
    void add_pair(std::unique_ptr<pair_state> p) { pairs_.push_back(std::move(p)); }
    void set_sessions(unsigned n) { sessions_ = n; }

    /// Starts the connections (route/rate: both ends of each pair; idle: the sessions, a few at
    /// a time; churn: nothing until start()).
    void begin() {
        asio::post(io_, [this] { do_begin(); });
    }
    /// Starts the load (after every worker is ready).
    void start() {
        asio::post(io_, [this] { do_start(); });
    }
    /// Asks the worker to report drained() as soon as nothing is in flight.
    void check_drain() {
        asio::post(io_, [this] { maybe_drained(); });
    }

    std::atomic<std::uint64_t> progress{0};  // messages received, sessions completed or held
    std::atomic<bool> ready{false};
    std::atomic<bool> drained{false};
    histogram hist;
    std::vector<std::unique_ptr<pair_state>>& pairs() { return pairs_; }

private:
    // ---- setup

    void do_begin() {
        switch (s_.mode) {
            case bench_mode::route:
            case bench_mode::rate:
                if (pairs_.empty()) {
                    ready.store(true);
                }
                for (auto& p : pairs_) {
                    p->rx = make_conn(role::rx, 64U * 1024U);
                    p->tx = make_conn(role::tx, 16U * 1024U);
                    p->rx->pair = p.get();
                    p->tx->pair = p.get();
                    start_connect(*p->rx);
                    start_connect(*p->tx);
                }
                break;
            case bench_mode::idle:
                if (sessions_ == 0) {
                    ready.store(true);
                }
                for (unsigned i = 0; i < std::min(sessions_, 32U); ++i) {
                    open_idle();
                }
                break;
            case bench_mode::churn:
                ready.store(true);
                break;
        }
    }

    /// A connection owned by conns_ (destroyed after the io_context has stopped).
    conn* make_conn(role r, std::size_t rbuf) {
        auto c = std::make_unique<conn>(io_, rbuf);
        c->what = r;
        conns_.push_back(std::move(c));
        return conns_.back().get();
    }

    void do_start() {
        switch (s_.mode) {
            case bench_mode::churn: {
                churn_ = make_conn(role::churn, 4096);
                start_connect(*churn_);
                break;
            }
            case bench_mode::route:
                for (auto& p : pairs_) {
                    pump(*p);
                }
                break;
            case bench_mode::rate:
                if (!pairs_.empty()) {
                    const double share = static_cast<double>(pairs_.size()) / static_cast<double>(s_.total_pairs);
                    interval_ns_ = 1e9 / (s_.o.rate * share);
                    rate_start_ = clock_type::now();
                    rate_tick();
                }
                break;
            case bench_mode::idle: break;
        }
    }

    void open_idle() {
        if (opened_ >= sessions_) {
            return;
        }
        ++opened_;
        start_connect(*make_conn(role::idle, 512));
    }

    void start_connect(conn& c) {
        c.started = clock_type::now();
        c.ready = false;
        c.info_seen = false;
        c.done = false;
        c.write_busy = false;
        c.out.clear();
        c.writing.clear();
        c.dec = proto::reply_decoder();
        c.nats.reset();
        const std::uint32_t gen = ++c.gen;
        const tcp::endpoint& ep = c.what == role::rx && s_.has_ep2 ? s_.ep2 : s_.ep;
        c.sock.async_connect(ep, in_slot(c.read_slot, [this, &c, gen](std::error_code ec) {
            if (gen != c.gen || stopping_) {
                return;
            }
            if (ec) {
                fail(exit_unavailable, who(c) + ": connect to " + s_.o.server + ": " + ec.message());
                return;
            }
            std::error_code ignore;
            c.sock.set_option(tcp::no_delay(true), ignore);
            if (!s_.nats) {
                c.out += s_.hello_frame;
                flush(c);
            }
            start_read(c);
        }));
    }

    // ---- I/O

    void flush(conn& c) {
        if (c.write_busy || c.out.empty() || stopping_) {
            return;
        }
        std::swap(c.out, c.writing);
        c.write_busy = true;
        const std::uint32_t gen = c.gen;
        asio::async_write(c.sock, asio::buffer(c.writing),
                          in_slot(c.write_slot, [this, &c, gen](std::error_code ec, std::size_t) {
                              if (gen != c.gen || stopping_) {
                                  return;
                              }
                              c.write_busy = false;
                              c.writing.clear();
                              if (ec) {
                                  fail(exit_unavailable, who(c) + ": write: " + ec.message());
                                  return;
                              }
                              if (c.what == role::tx) {
                                  pump(*c.pair);
                              } else {
                                  flush(c);
                              }
                              if (s_.current() == phase::drain) {
                                  maybe_drained();
                              }
                          }));
    }

    void start_read(conn& c) {
        const std::uint32_t gen = c.gen;
        c.sock.async_read_some(asio::buffer(c.rbuf),
                               in_slot(c.read_slot, [this, &c, gen](std::error_code ec, std::size_t n) {
                                   if (gen != c.gen || stopping_) {
                                       return;
                                   }
                                   if (ec) {
                                       fail(exit_unavailable,
                                            who(c) + ": " +
                                                (ec == asio::error::eof ? std::string("the server closed the connection")
                                                                        : "read: " + ec.message()));
                                       return;
                                   }
                                   const bool go = on_data(c, std::string_view(c.rbuf.data(), n));
                                   if (c.done) {
                                       finish_churn(c);
                                       return;
                                   }
                                   if (go && gen == c.gen && !stopping_) {
                                       start_read(c);
                                   }
                               }));
    }

    /// Handles what one read brought; false stops reading (a failure, or churn's end).
    bool on_data(conn& c, std::string_view in) {
        bool go = true;
        if (s_.nats) {
            if (!c.nats.feed(in, [&](const nats_frame& f) { return on_nats(c, f); })) {
                if (!c.nats.error().empty()) {
                    fail(exit_check, who(c) + ": " + c.nats.error());
                }
                go = false;
            }
        } else {
            while (!in.empty()) {
                auto r = c.dec.decode(in);
                in.remove_prefix(r.consumed);
                if (r.status == proto::decode_status::need_more) {
                    break;
                }
                if (r.status == proto::decode_status::bad) {
                    fail(exit_check, who(c) + ": undecodable frame from the server: " + std::string(r.detail));
                    return false;
                }
                if (!on_lariv(c, r.message)) {
                    go = false;
                    break;
                }
            }
        }
        if (!go || c.done) {
            return false;
        }
        if (c.what == role::rx) {
            progress.store(delivered_, std::memory_order_relaxed);
            if (rate_blocked_) {
                rate_blocked_ = false;
                rate_tick();
            }
            pump(*c.pair);
            if (s_.current() == phase::drain) {
                maybe_drained();
            }
        }
        flush(c);
        return true;
    }

    bool on_lariv(conn& c, const proto::reply& m) {
        if (const auto* d = std::get_if<proto::deliver_msg>(&m)) {
            if (c.what != role::rx) {
                fail(exit_check, who(c) + ": unexpected MSG");
                return false;
            }
            if (d->from != c.pair->tx->id) {
                fail(exit_check, who(c) + ": MSG from " + d->from.to_string() + ", expected the sender " +
                                     c.pair->tx->id.to_string());
                return false;
            }
            return on_message(*c.pair, d->payload);
        }
        if (const auto* a = std::get_if<proto::ack_msg>(&m)) {
            return on_ack(c, *a);
        }
        if (std::holds_alternative<proto::ping_msg>(m)) {
            proto::encode(c.out, proto::pong_msg{});
            return true;
        }
        if (std::holds_alternative<proto::pong_msg>(m)) {
            return true;
        }
        if (const auto* e = std::get_if<proto::err_msg>(&m)) {
            fail(exit_check, who(c) + ": -ERR " + std::string(proto::to_string(e->code)) + " " + std::string(e->message));
            return false;
        }
        if (const auto* b = std::get_if<proto::body_msg>(&m); b != nullptr && b->kind == proto::body_kind::hello && !c.ready) {
            if (c.what == role::rx || c.what == role::tx) {
                auto hr = proto::parse_body<proto::hello_reply>(b->json, c.dec.limits());
                if (!hr) {
                    fail(exit_check, who(c) + ": bad +HELLO JSON");
                    return false;
                }
                c.id = hr->session;
            }
            return on_ready(c);
        }
        fail(exit_check, who(c) + ": unexpected reply from the server");
        return false;
    }

    bool on_nats(conn& c, const nats_frame& f) {
        switch (f.what) {
            case nats_frame::kind::msg:
                if (c.what != role::rx || !c.ready) {
                    fail(exit_check, who(c) + ": unexpected MSG on " + std::string(f.subject));
                    return false;
                }
                if (f.subject != c.pair->subject || f.sid != "1") {
                    fail(exit_check, who(c) + ": MSG on " + std::string(f.subject) + " sid " + std::string(f.sid) +
                                         ", expected " + c.pair->subject + " sid 1");
                    return false;
                }
                return on_message(*c.pair, f.payload);
            case nats_frame::kind::info:
                if (!c.info_seen) {
                    c.info_seen = true;
                    c.out += s_.connect_frame;
                    if (c.what == role::rx) {
                        c.out += "SUB " + c.pair->subject + " 1\r\n";
                    }
                    c.out += "PING\r\n";  // its PONG says CONNECT (and SUB) took effect
                }
                return true;
            case nats_frame::kind::pong:
                if (!c.ready && c.info_seen) {
                    return on_ready(c);
                }
                return true;
            case nats_frame::kind::ping: c.out += "PONG\r\n"; return true;
            case nats_frame::kind::ok: return true;
            case nats_frame::kind::err:
                fail(exit_check, who(c) + ": " + std::string(f.line));
                return false;
        }
        return true;
    }

    /// The handshake completed.
    bool on_ready(conn& c) {
        c.ready = true;
        switch (c.what) {
            case role::churn: c.done = true; return false;
            case role::idle:
                ++held_;
                hist.record(static_cast<std::uint64_t>(
                    std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - c.started).count()));
                progress.store(held_, std::memory_order_relaxed);
                if (held_ == sessions_) {
                    ready.store(true);
                }
                open_idle();
                return true;
            case role::rx:
            case role::tx: {
                pair_state& p = *c.pair;
                if (++p.ready == 2) {
                    build_frame(p);
                    if (++pairs_ready_ == pairs_.size()) {
                        ready.store(true);
                    }
                }
                return true;
            }
        }
        return true;
    }

    void finish_churn(conn& c) {
        const auto t = clock_type::now();
        std::error_code ignore;
        c.sock.close(ignore);
        ++c.gen;  // handlers of the closed socket (none expected) are ignored
        ++sessions_done_;
        if (s_.current() == phase::measure) {
            hist.record(static_cast<std::uint64_t>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(t - c.started).count()));
        }
        progress.store(sessions_done_, std::memory_order_relaxed);
        if (s_.current() >= phase::drain) {
            churn_stopped_ = true;
            maybe_drained();
            return;
        }
        start_connect(c);
    }

    // ---- routing

    void build_frame(pair_state& p) {
        const std::size_t size = s_.o.size;
        p.head = s_.mode == bench_mode::rate ? 16 : 8;
        p.tail_off = size >= p.head + 8 ? size - 8 : 0;
        const std::size_t filler_end = p.tail_off != 0 ? p.tail_off : size;
        p.filler.resize(filler_end > p.head ? filler_end - p.head : 0);
        for (std::size_t i = 0; i < p.filler.size(); ++i) {
            p.filler[i] = static_cast<char>((i * 7 + p.index * 31 + 13) & 0xff);  // \r, \n, NUL too
        }
        std::string payload(size, '\0');
        std::memcpy(payload.data() + p.head, p.filler.data(), p.filler.size());
        p.frame.clear();
        if (s_.nats) {
            p.frame = "PUB " + p.subject + " " + std::to_string(size) + "\r\n";
        } else {
            proto::encode_send_header(p.frame, p.rx->id, size,
                                      s_.o.ack ? std::string_view("0000000000000000") : std::string_view());
            if (s_.o.ack) {
                p.token_off = p.frame.size() - 2 - token_digits;
            }
        }
        p.payload_off = p.frame.size();
        p.frame += payload;
        p.frame += "\r\n";
        // The in-flight bound counts the frames the receiver reads (MSG header + payload + CRLF).
        const std::size_t msg_frame = (s_.nats ? 4 + p.subject.size() + 3 + 21 : 4 + 32 + 1 + 21) + size + 2;
        p.cap_msgs = std::max<std::uint64_t>(1, s_.o.inflight_kib * 1024U / msg_frame);
        if (s_.o.ack) {
            p.acked.assign(s_.o.window, 0);
        }
        p.tx->out.reserve(chunk + p.frame.size());
        p.tx->writing.reserve(chunk + p.frame.size());
    }

    static constexpr std::size_t chunk = 64U * 1024U;

    [[nodiscard]] bool room(const pair_state& p) const noexcept {
        if (p.next_seq - p.recv_seq >= p.cap_msgs) {
            return false;
        }
        return !(s_.o.ack && p.next_seq - p.ack_low >= s_.o.window);
    }

    void append(pair_state& p, std::uint64_t sent_ns) {
        std::string& out = p.tx->out;
        const std::size_t at = out.size();
        out += p.frame;
        char* f = out.data() + at + p.payload_off;
        const std::uint64_t seq = p.next_seq;
        std::memcpy(f, &seq, 8);
        if (p.head == 16) {
            std::memcpy(f + 8, &sent_ns, 8);
        }
        if (p.tail_off != 0) {
            std::memcpy(f + p.tail_off, &seq, 8);
        }
        if (s_.o.ack) {
            put_token(out.data() + at + p.token_off, seq);
        }
        ++p.next_seq;
    }

    /// Route mode: appends SENDs while the in-flight bound, the ack window and the chunk allow,
    /// then writes (if no write is in flight).
    void pump(pair_state& p) {
        const phase ph = s_.current();
        if (s_.mode == bench_mode::route && (ph == phase::warmup || ph == phase::measure)) {
            while (p.tx->out.size() < chunk && room(p)) {
                append(p, 0);
            }
        }
        flush(*p.tx);
    }

    /// Rate mode: sends every message whose time has come (message k of this worker is due at
    /// start + k * interval, round robin over its pairs); the payload carries that intended time,
    /// so a late send counts as latency (no coordinated omission).
    void rate_tick() {
        if (stopping_) {
            return;
        }
        if (s_.current() >= phase::drain) {
            maybe_drained();
            return;
        }
        const auto now = clock_type::now();
        clock_type::time_point due;
        for (;;) {
            due = rate_start_ + std::chrono::nanoseconds(static_cast<std::int64_t>(
                                    static_cast<double>(rate_k_) * interval_ns_));
            if (due > now) {
                break;
            }
            pair_state& p = *pairs_[rate_k_ % pairs_.size()];
            if (!room(p)) {
                rate_blocked_ = true;  // resumed when its receiver reads
                break;
            }
            append(p, static_cast<std::uint64_t>(
                          std::chrono::duration_cast<std::chrono::nanoseconds>(due.time_since_epoch()).count()));
            ++rate_k_;
        }
        for (auto& p : pairs_) {
            flush(*p->tx);
        }
        if (!rate_blocked_) {
            timer_.expires_at(due);
            timer_.async_wait(in_slot(timer_slot_, [this](std::error_code ec) {
                if (!ec) {
                    rate_tick();
                }
            }));
        }
    }

    bool on_message(pair_state& p, std::string_view pl) {
        if (pl.size() != s_.o.size) {
            fail(exit_check, who(*p.rx) + ": message of " + std::to_string(pl.size()) + " bytes, expected " +
                                 std::to_string(s_.o.size) + " (message " + std::to_string(p.recv_seq) + ")");
            return false;
        }
        std::uint64_t seq = 0;
        std::memcpy(&seq, pl.data(), 8);
        if (seq != p.recv_seq) {
            fail(exit_check, who(*p.rx) + ": got message " + std::to_string(seq) + ", expected " +
                                 std::to_string(p.recv_seq) +
                                 (seq > p.recv_seq ? " (loss)" : " (duplicate or reordering)"));
            return false;
        }
        std::uint64_t tail = seq;
        if (p.tail_off != 0) {
            std::memcpy(&tail, pl.data() + p.tail_off, 8);
        }
        if (tail != seq || std::memcmp(pl.data() + p.head, p.filler.data(), p.filler.size()) != 0) {
            fail(exit_check, who(*p.rx) + ": payload of message " + std::to_string(seq) + " is corrupt");
            return false;
        }
        if (p.head == 16 && s_.current() == phase::measure) {
            std::uint64_t sent = 0;
            std::memcpy(&sent, pl.data() + 8, 8);
            const std::uint64_t now = now_ns();
            hist.record(now > sent ? now - sent : 0);
        }
        ++p.recv_seq;
        ++delivered_;
        if (p.recv_seq > p.next_seq) {
            fail(exit_check, who(*p.rx) + ": more messages received than sent");
            return false;
        }
        return true;
    }

    bool on_ack(conn& c, const proto::ack_msg& a) {
        const auto seq = parse_token(a.token);
        if (c.what != role::tx || !s_.o.ack || !seq) {
            fail(exit_check, who(c) + ": unexpected ACK " + std::string(a.token));
            return false;
        }
        pair_state& p = *c.pair;
        if (a.error) {
            fail(exit_check, who(c) + ": ACK " + std::string(a.token) + " " + std::string(proto::to_string(*a.error)) +
                                 " (message " + std::to_string(*seq) + " refused)");
            return false;
        }
        if (*seq < p.ack_low || *seq >= p.next_seq || p.acked[*seq % s_.o.window] != 0) {
            fail(exit_check, who(c) + ": ACK for message " + std::to_string(*seq) + " that is not outstanding");
            return false;
        }
        p.acked[*seq % s_.o.window] = 1;
        while (p.ack_low < p.next_seq && p.acked[p.ack_low % s_.o.window] != 0) {
            p.acked[p.ack_low % s_.o.window] = 0;
            ++p.ack_low;
        }
        pump(p);
        if (s_.current() == phase::drain) {
            maybe_drained();
        }
        return true;
    }

    void maybe_drained() {
        if (drained.load(std::memory_order_relaxed) || s_.current() < phase::drain) {
            return;
        }
        if (s_.mode == bench_mode::churn) {
            if (churn_ == nullptr || churn_stopped_) {
                drained.store(true);
            }
            return;
        }
        for (const auto& p : pairs_) {
            if (p->recv_seq != p->next_seq || (s_.o.ack && p->ack_low != p->next_seq)) {
                return;
            }
            if (p->tx != nullptr && (p->tx->write_busy || !p->tx->out.empty())) {
                return;
            }
        }
        drained.store(true);
    }

    shared_state& s_;
    [[maybe_unused]] unsigned index_;
    asio::io_context io_;
    asio::executor_work_guard<asio::io_context::executor_type> work_;
    asio::steady_timer timer_{io_};
    handler_slot timer_slot_;
    std::thread thread_;
    bool stopping_ = false;
    std::vector<std::unique_ptr<conn>> conns_;
    std::vector<std::unique_ptr<pair_state>> pairs_;
    std::size_t pairs_ready_ = 0;
    std::uint64_t delivered_ = 0;
    // churn
    conn* churn_ = nullptr;
    bool churn_stopped_ = false;
    std::uint64_t sessions_done_ = 0;
    // idle
    unsigned sessions_ = 0;
    unsigned opened_ = 0;
    unsigned held_ = 0;
    // rate
    clock_type::time_point rate_start_{};
    double interval_ns_ = 0;
    std::uint64_t rate_k_ = 0;
    bool rate_blocked_ = false;
};

// ------------------------------------------------------------------------------- /proc, rusage

std::optional<std::uint64_t> rss_kib(int pid) {
    std::ifstream in(pid == 0 ? std::string("/proc/self/status") : "/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmRSS:", 0) == 0) {
            return std::strtoull(line.c_str() + 6, nullptr, 10);
        }
    }
    return std::nullopt;
}

/// utime + stime of a process, in seconds.
std::optional<double> proc_cpu_s(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = s.rfind(')');
    if (close == std::string::npos) {
        return std::nullopt;
    }
    std::istringstream fields(s.substr(close + 2));
    std::string f;
    unsigned long long utime = 0;
    unsigned long long stime = 0;
    for (int i = 3; fields >> f; ++i) {  // field 3 is the state
        if (i == 14) {
            utime = std::strtoull(f.c_str(), nullptr, 10);
        } else if (i == 15) {
            stime = std::strtoull(f.c_str(), nullptr, 10);
            break;
        }
    }
    return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double self_cpu_s() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    auto tv = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
    return tv(ru.ru_utime) + tv(ru.ru_stime);
}

// ------------------------------------------------------------------------------- the run

struct snapshot {
    clock_type::time_point t;
    std::uint64_t progress = 0;
    double client_cpu = 0;
    std::optional<double> server_cpu;
};

int usage_error(const std::string& msg) {
    std::fprintf(stderr, "lariv bench: %s\n", msg.c_str());
    return exit_usage;
}

std::optional<std::pair<std::string, std::string>> split_host_port(const std::string& s) {
    const auto colon = s.rfind(':');
    if (colon == std::string::npos || colon + 1 >= s.size()) {
        return std::nullopt;
    }
    std::string host = s.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    return std::pair{host.empty() ? std::string("127.0.0.1") : host, s.substr(colon + 1)};
}

nlohmann::json latency_json(const histogram& h) {
    auto us = [](std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; };
    return {{"count", h.count()},
            {"p50", us(h.value_at(50))},
            {"p90", us(h.value_at(90))},
            {"p99", us(h.value_at(99))},
            {"p99_9", us(h.value_at(99.9))},
            {"max", us(h.max())},
            {"mean", h.mean() / 1000.0}};
}

const char* mode_name(bench_mode m) {
    switch (m) {
        case bench_mode::churn: return "churn";
        case bench_mode::route: return "route";
        case bench_mode::rate: return "rate";
        case bench_mode::idle: return "idle";
    }
    return "?";
}

}  // namespace

void add_bench_options(CLI::App& sub, bench_options& o) {
    const auto modes = CLI::IsMember({"churn", "route", "rate", "idle"});
    sub.add_option("mode", o.mode, "churn | route | rate | idle")->check(modes);
    sub.add_option("--mode", o.mode, "The mode, as an option")->check(modes);
    sub.add_option("--protocol", o.protocol, "lariv or nats (the same engine speaks NATS for nats-server)")
        ->check(CLI::IsMember({"lariv", "nats"}))
        ->capture_default_str();
    sub.add_option("--client-threads", o.client_threads,
                   "Client threads, one io_context each (default: 1 for churn and idle, min(pairs, nproc) for route and rate)")
        ->check(CLI::Range(1U, 1024U));
    sub.add_option("--seconds", o.seconds, "Measured seconds (idle: the hold)")
        ->check(CLI::Range(0.01, 86400.0))
        ->capture_default_str();
    sub.add_option("--warmup", o.warmup, "Unmeasured seconds before the measurement")
        ->check(CLI::Range(0.0, 3600.0))
        ->capture_default_str();
    sub.add_option("--pairs", o.pairs, "route, rate: sender/receiver pairs")
        ->check(CLI::Range(1U, 100000U))
        ->capture_default_str();
    sub.add_option("--size", o.size, "route, rate: payload bytes (>= 8; rate: >= 16)")
        ->check(CLI::Range(std::size_t{8}, std::size_t{1024} * 1024))
        ->capture_default_str();
    sub.add_flag("--ack", o.ack, "route, rate: tokened SENDs, at most --window unacknowledged per sender (lariv only)");
    sub.add_option("--window", o.window, "Unacknowledged SENDs per sender with --ack")
        ->check(CLI::Range(1U, 1000000U))
        ->capture_default_str();
    sub.add_option("--inflight", o.inflight_kib, "KiB of messages sent but not yet received, per pair")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 20))
        ->capture_default_str();
    sub.add_option("--rate", o.rate, "rate: messages per second, in total over all pairs")
        ->check(CLI::Range(1.0, 1e9))
        ->capture_default_str();
    sub.add_option("--histogram", o.histogram,
                   "rate, churn, idle: write the latency distribution to FILE (HdrHistogram percentile text, us)");
    sub.add_option("--sessions", o.sessions, "idle: sessions to open and hold")
        ->check(CLI::Range(1U, 10000000U))
        ->capture_default_str();
    sub.add_option("--server2", o.server2,
                   "route, rate: receivers connect to this host:port (another node of the cluster), senders to --server");
    sub.add_option("--server-pid", o.server_pid, "Read the server's RSS and CPU time from /proc/PID")
        ->check(CLI::Range(1, INT_MAX));
    sub.add_flag("-q,--quiet", o.quiet, "No progress line on stderr");
}

int run_bench(bench_options o) {
    // ---- validate
    if (o.mode.empty()) {
        return usage_error("a mode is required: churn, route, rate or idle (lariv bench --help)");
    }
    shared_state s;
    s.mode = o.mode == "churn" ? bench_mode::churn
             : o.mode == "rate" ? bench_mode::rate
             : o.mode == "idle" ? bench_mode::idle
                                : bench_mode::route;
    s.nats = o.protocol == "nats";
    if (s.nats && o.ack) {
        return usage_error("--ack needs request/reply with nats, which lariv bench does not implement");
    }
    if (s.mode == bench_mode::rate && o.size < 16) {
        return usage_error("rate mode needs --size >= 16 (the payload carries a sequence number and the send time)");
    }
    if (s.mode == bench_mode::route && !o.histogram.empty()) {
        return usage_error("--histogram is for rate, churn and idle (route measures throughput)");
    }
    if (s.nats && !o.server_given) {
        o.server = "127.0.0.1:4222";
    }
    const auto hp = split_host_port(o.server);
    if (!hp) {
        return usage_error("--server must be host:port, got '" + o.server + "'");
    }
    const unsigned nproc = std::max(1U, std::thread::hardware_concurrency());
    unsigned threads = o.client_threads;
    if (threads == 0) {
        threads = s.mode == bench_mode::route || s.mode == bench_mode::rate ? std::min(o.pairs, nproc) : 1U;
    }
    if (s.mode == bench_mode::route || s.mode == bench_mode::rate) {
        threads = std::min(threads, o.pairs);
    }
    if (s.mode == bench_mode::idle) {
        threads = std::min(threads, o.sessions);
        rlimit rl{};
        ::getrlimit(RLIMIT_NOFILE, &rl);
        const rlim_t want = static_cast<rlim_t>(o.sessions) + 64;
        if (rl.rlim_cur < want) {
            rl.rlim_cur = std::min(rl.rlim_max, want);
            ::setrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur < want) {
            return usage_error(std::to_string(o.sessions) + " sessions need " + std::to_string(want) +
                               " file descriptors; the hard limit is " + std::to_string(rl.rlim_max) +
                               " (raise it, or ask for fewer --sessions)");
        }
    }
    std::FILE* hist_file = nullptr;
    if (!o.histogram.empty()) {
        hist_file = std::fopen(o.histogram.c_str(), "w");
        if (hist_file == nullptr) {
            return usage_error("cannot write " + o.histogram + ": " + std::strerror(errno));
        }
    }

    if (!o.server2.empty() && s.mode != bench_mode::route && s.mode != bench_mode::rate) {
        return usage_error("--server2 is for route and rate (receivers on another node)");
    }
    const auto hp2 = split_host_port(o.server2.empty() ? o.server : o.server2);
    if (!hp2) {
        return usage_error("--server2 must be host:port, got '" + o.server2 + "'");
    }

    // ---- resolve
    for (int which = 0; which < (o.server2.empty() ? 1 : 2); ++which) {
        const auto& h = which == 0 ? *hp : *hp2;
        asio::io_context rio;
        tcp::resolver res(rio);
        std::error_code ec;
        auto r = res.resolve(h.first, h.second, ec);
        if (ec || r.empty()) {
            std::fprintf(stderr, "lariv bench: resolve %s: %s\n", (which == 0 ? o.server : o.server2).c_str(),
                         ec ? ec.message().c_str() : "no address");
            if (hist_file != nullptr) {
                std::fclose(hist_file);
            }
            return exit_unavailable;
        }
        (which == 0 ? s.ep : s.ep2) = r.begin()->endpoint();
        s.has_ep2 = which == 1;
    }
    {
        proto::hello_msg h;
        h.name = "lariv-bench";
        proto::encode(s.hello_frame, h);
        s.connect_frame =
            "CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"lariv-bench\",\"lang\":\"c++\",\"version\":\"" +
            std::string(LARIV_VERSION) + "\",\"protocol\":1}\r\n";
    }
    s.o = o;
    s.total_pairs = o.pairs;
    s.run_tag = "lariv-bench." + std::to_string(::getpid()) + "." + std::to_string(now_ns() % 1000000007ULL);

    // ---- workers
    std::vector<std::unique_ptr<worker>> workers;
    for (unsigned i = 0; i < threads; ++i) {
        workers.push_back(std::make_unique<worker>(s, i));
    }
    if (s.mode == bench_mode::route || s.mode == bench_mode::rate) {
        for (unsigned i = 0; i < o.pairs; ++i) {
            auto p = std::make_unique<pair_state>();
            p->index = i;
            p->subject = s.run_tag + "." + std::to_string(i);
            workers[i % threads]->add_pair(std::move(p));
        }
    }
    if (s.mode == bench_mode::idle) {
        for (unsigned i = 0; i < threads; ++i) {
            workers[i]->set_sessions(o.sessions / threads + (i < o.sessions % threads ? 1U : 0U));
        }
    }

    const bool tty = !o.quiet && ::isatty(2) == 1;
    auto total_progress = [&] {
        std::uint64_t n = 0;
        for (auto& w : workers) {
            n += w->progress.load(std::memory_order_relaxed);
        }
        return n;
    };
    auto take = [&] {
        snapshot sn;
        sn.t = clock_type::now();
        sn.progress = total_progress();
        sn.client_cpu = self_cpu_s();
        if (o.server_pid != 0) {
            sn.server_cpu = proc_cpu_s(o.server_pid);
        }
        return sn;
    };
    auto all = [&](auto pred) {
        return std::all_of(workers.begin(), workers.end(), [&](auto& w) { return pred(*w); });
    };

    // 0: not known (no --server-pid). Plain integers: gcc 12 warns about optionals here.
    const std::uint64_t server_rss0 = o.server_pid != 0 ? rss_kib(o.server_pid).value_or(0) : 0;
    if (o.server_pid != 0 && server_rss0 == 0) {
        if (hist_file != nullptr) {
            std::fclose(hist_file);
        }
        return usage_error("--server-pid " + std::to_string(o.server_pid) + ": no such process (/proc/PID/status)");
    }
    const std::optional<std::uint64_t> client_rss0 = rss_kib(0);
    std::optional<std::uint64_t> server_rss1;
    std::optional<std::uint64_t> client_rss1;

    for (auto& w : workers) {
        w->run();
        w->begin();
    }
    const auto setup_t0 = clock_type::now();
    const auto conns = s.mode == bench_mode::idle ? o.sessions : 2U * o.pairs;
    const auto setup_deadline = setup_t0 + std::chrono::milliseconds(o.timeout_ms) + std::chrono::milliseconds(2 * conns);
    unsigned last_print = 0;
    while (!g_failed.load() && !all([](worker& w) { return w.ready.load(); })) {
        if (clock_type::now() > setup_deadline) {
            fail(exit_unavailable, "the sessions did not all handshake within " +
                                       std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                          setup_deadline - setup_t0)
                                                          .count()) +
                                       " ms (" + std::to_string(total_progress()) + " of " +
                                       std::to_string(conns) + " for idle)");
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        if (tty && s.mode == bench_mode::idle) {
            const auto el = static_cast<unsigned>(std::chrono::duration_cast<std::chrono::seconds>(clock_type::now() - setup_t0).count());
            if (el != last_print) {
                last_print = el;
                std::fprintf(stderr, "\r\033[Klariv bench idle: %" PRIu64 " of %u sessions connected", total_progress(), o.sessions);
            }
        }
    }
    const double setup_s = std::chrono::duration<double>(clock_type::now() - setup_t0).count();

    snapshot a{};
    snapshot b{};
    if (!g_failed.load()) {
        if (s.mode == bench_mode::idle) {
            // Let both sides settle after the connection burst (a GC, a trim, the last writes), as
            // tests/bench/idle_sessions.py does: the hold measures sessions that are only idle.
            std::this_thread::sleep_for(std::chrono::seconds(2));
            server_rss1 = o.server_pid != 0 ? rss_kib(o.server_pid) : std::nullopt;
            client_rss1 = rss_kib(0);
        }
        if (s.has_ep2) {
            // Receivers on another node: let the cluster learn them first (a NATS cluster
            // propagates a subscription's interest over its routes asynchronously; a message
            // published before that is dropped, which the loss check would report).
            std::this_thread::sleep_for(std::chrono::milliseconds(500));
        }
        s.ph.store(static_cast<int>(phase::warmup));
        for (auto& w : workers) {
            w->start();
        }
        auto watch = [&](double seconds, phase ph) {
            const auto t0 = clock_type::now();
            const auto until = t0 + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds));
            auto last_t = t0;
            std::uint64_t last_n = total_progress();
            auto moved_t = t0;
            std::uint64_t moved_n = last_n;
            while (!g_failed.load()) {
                const auto now = clock_type::now();
                if (now >= until) {
                    return;
                }
                std::this_thread::sleep_for(std::min<clock_type::duration>(until - now, std::chrono::milliseconds(20)));
                const auto t = clock_type::now();
                const std::uint64_t n = total_progress();
                if (n != moved_n) {
                    moved_n = n;
                    moved_t = t;
                } else if (s.mode != bench_mode::idle && t - moved_t > std::chrono::milliseconds(o.timeout_ms)) {
                    fail(exit_check, "no progress for " + std::to_string(o.timeout_ms) + " ms (" + std::to_string(n) +
                                         (s.mode == bench_mode::churn ? " sessions" : " messages") + " so far)");
                    return;
                }
                if (tty && t - last_t >= std::chrono::seconds(1)) {
                    const double dt = std::chrono::duration<double>(t - last_t).count();
                    const double el = std::chrono::duration<double>(t - t0).count();
                    if (s.mode == bench_mode::idle) {
                        std::fprintf(stderr, "\r\033[Klariv bench idle: %u sessions held %.0f/%.0f s", o.sessions, el, seconds);
                    } else {
                        std::fprintf(stderr, "\r\033[Klariv bench %s: %s %.0f/%.0f s  %.0f %s/s", mode_name(s.mode),
                                     ph == phase::warmup ? "warm-up" : "measuring", el, seconds,
                                     static_cast<double>(n - last_n) / dt, s.mode == bench_mode::churn ? "sessions" : "msgs");
                    }
                    last_t = t;
                    last_n = n;
                }
            }
        };
        if (s.mode != bench_mode::idle && o.warmup > 0) {
            watch(o.warmup, phase::warmup);
        }
        a = take();
        s.ph.store(static_cast<int>(phase::measure));
        watch(o.seconds, phase::measure);
        b = take();
        s.ph.store(static_cast<int>(phase::drain));
        for (auto& w : workers) {
            w->check_drain();
        }
        const auto drain_deadline = clock_type::now() + std::chrono::milliseconds(std::max<std::uint32_t>(o.timeout_ms, 10000));
        while (!g_failed.load() && !all([](worker& w) { return w.drained.load(); })) {
            if (clock_type::now() > drain_deadline) {
                fail(exit_check, "messages missing after the stop:");
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        if (tty) {
            std::fprintf(stderr, "\r\033[K");
        }
    } else if (tty) {
        std::fprintf(stderr, "\r\033[K");
    }
    const std::optional<std::uint64_t> server_rss_end = o.server_pid != 0 ? rss_kib(o.server_pid) : std::nullopt;
    for (auto& w : workers) {
        w->shutdown();
    }
    if (g_failed.load() && g_fail_msg == "messages missing after the stop:") {
        for (auto& w : workers) {
            for (auto& p : w->pairs()) {
                if (p->recv_seq != p->next_seq || (o.ack && p->ack_low != p->next_seq)) {
                    g_fail_msg += " pair " + std::to_string(p->index) + ": sent " + std::to_string(p->next_seq) +
                                  ", received " + std::to_string(p->recv_seq) +
                                  (o.ack ? ", acknowledged below " + std::to_string(p->ack_low) : std::string()) + ";";
                }
            }
        }
    }

    // ---- results
    histogram h;
    for (auto& w : workers) {
        h.merge(w->hist);
    }
    std::uint64_t sent = 0;
    for (auto& w : workers) {
        for (auto& p : w->pairs()) {
            sent += p->next_seq;
        }
    }
    const double secs = std::chrono::duration<double>(b.t - a.t).count();
    const std::uint64_t n = b.progress - a.progress;
    const double client_cpu = b.client_cpu - a.client_cpu;
    nlohmann::json j;
    j["mode"] = mode_name(s.mode);
    j["protocol"] = o.protocol;
    j["server"] = o.server;
    if (!o.server2.empty()) {
        j["server2"] = o.server2;
    }
    j["client_threads"] = threads;
    j["seconds"] = secs;
    j["warmup"] = s.mode == bench_mode::idle ? 0.0 : o.warmup;
    const bool ok = !g_failed.load();
    j["ok"] = ok;
    j["errors"] = ok ? 0 : 1;
    if (!ok) {
        j["error"] = g_fail_msg;
    }
    const bool routes = s.mode == bench_mode::route || s.mode == bench_mode::rate;
    const double per_s = secs > 0 ? static_cast<double>(n) / secs : 0.0;
    if (routes) {
        j["pairs"] = o.pairs;
        j["size"] = o.size;
        j["ack"] = o.ack;
        if (o.ack) {
            j["window"] = o.window;
        }
        j["inflight_kib"] = o.inflight_kib;
        j["msgs"] = n;
        j["msgs_sent_total"] = sent;
        j["msgs_per_s"] = per_s;
        j["mb_per_s"] = per_s * static_cast<double>(o.size) / 1e6;
    }
    if (s.mode == bench_mode::rate) {
        j["rate_target"] = o.rate;
        j["latency_us"] = latency_json(h);
    }
    if (s.mode == bench_mode::churn) {
        j["sessions"] = n;
        j["sessions_per_s"] = per_s;
        j["handshake_us"] = latency_json(h);
    }
    if (s.mode == bench_mode::idle) {
        j["sessions"] = o.sessions;
        j["connect_seconds"] = setup_s;
        j["handshake_us"] = latency_json(h);
    }
    const std::uint64_t per_unit = s.mode == bench_mode::idle ? 0 : n;
    nlohmann::json client{{"cpu_s", client_cpu},
                          {"cpu_pct", secs > 0 ? client_cpu / secs * 100.0 : 0.0},
                          {"heap_fallbacks", g_heap_fallbacks.load()}};
    if (per_unit != 0) {
        client[s.mode == bench_mode::churn ? "cpu_us_per_session" : "cpu_ns_per_msg"] =
            s.mode == bench_mode::churn ? client_cpu * 1e6 / static_cast<double>(per_unit)
                                        : client_cpu * 1e9 / static_cast<double>(per_unit);
    }
    if (s.mode == bench_mode::idle && client_rss0 && client_rss1) {
        client["rss_before_kib"] = *client_rss0;
        client["rss_after_kib"] = *client_rss1;
        client["rss_per_session_b"] =
            (static_cast<double>(*client_rss1) - static_cast<double>(*client_rss0)) * 1024.0 / o.sessions;
    }
    j["client"] = client;
    if (o.server_pid != 0) {
        nlohmann::json server{{"pid", o.server_pid}};
        if (a.server_cpu && b.server_cpu) {
            const double sc = *b.server_cpu - *a.server_cpu;
            server["cpu_s"] = sc;
            server["cpu_pct"] = secs > 0 ? sc / secs * 100.0 : 0.0;
            if (per_unit != 0) {
                server[s.mode == bench_mode::churn ? "cpu_us_per_session" : "cpu_ns_per_msg"] =
                    s.mode == bench_mode::churn ? sc * 1e6 / static_cast<double>(per_unit)
                                                : sc * 1e9 / static_cast<double>(per_unit);
            }
        }
        server["rss_before_kib"] = server_rss0;
        if (s.mode == bench_mode::idle && server_rss1) {
            server["rss_after_kib"] = *server_rss1;
            server["rss_per_session_b"] =
                (static_cast<double>(*server_rss1) - static_cast<double>(server_rss0)) * 1024.0 / o.sessions;
        } else if (server_rss_end) {
            server["rss_end_kib"] = *server_rss_end;
        }
        j["server_process"] = server;
    }

    if (hist_file != nullptr) {
        h.write_percentiles(hist_file);
        std::fclose(hist_file);
    }

    if (o.json) {
        std::printf("%s\n", j.dump().c_str());
    } else if (ok) {
        std::printf("lariv bench %s: %s protocol, %s, %u client thread%s", mode_name(s.mode), o.protocol.c_str(),
                    o.server.c_str(), threads, threads == 1 ? "" : "s");
        if (routes) {
            std::printf(", %u pair%s, %zu B payload%s", o.pairs, o.pairs == 1 ? "" : "s", o.size,
                        o.ack ? (", acked, window " + std::to_string(o.window)).c_str() : "");
        }
        if (s.mode == bench_mode::idle) {
            std::printf(", %u sessions held %.1f s\n", o.sessions, secs);
        } else {
            std::printf(", %.1f s measured after %.1f s warm-up\n", secs, o.warmup);
        }
        auto lat_row = [&](const char* what) {
            auto us = [](std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; };
            std::printf("  %-20s p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  (mean %.1f, %" PRIu64 " samples)\n",
                        what, us(h.value_at(50)), us(h.value_at(90)), us(h.value_at(99)), us(h.value_at(99.9)),
                        us(h.max()), h.mean() / 1000.0, h.count());
        };
        if (routes) {
            std::printf("  %-20s %.0f msgs/s  %.2f MB/s  (%" PRIu64 " messages in the window, all %" PRIu64
                        " checked: order, size, content)\n",
                        "throughput", per_s, per_s * static_cast<double>(o.size) / 1e6, n, sent);
        }
        if (s.mode == bench_mode::rate) {
            std::printf("  %-20s %.0f msgs/s\n", "target rate", o.rate);
            lat_row("one-way latency us");
        }
        if (s.mode == bench_mode::churn) {
            std::printf("  %-20s %.0f sessions/s  (%" PRIu64 " sessions)\n", "churn", per_s, n);
            lat_row("handshake us");
        }
        if (s.mode == bench_mode::idle) {
            std::printf("  %-20s %.2f s for %u sessions\n", "connect + handshake", setup_s, o.sessions);
            lat_row("handshake us");
            if (client_rss0 && client_rss1) {
                std::printf("  %-20s %.0f B RSS per session, %.2f%% CPU over the hold\n", "client",
                            (static_cast<double>(*client_rss1) - static_cast<double>(*client_rss0)) * 1024.0 / o.sessions,
                            secs > 0 ? client_cpu / secs * 100.0 : 0.0);
            }
            if (server_rss0 != 0 && server_rss1) {
                std::printf("  %-20s %.0f B RSS per session (%" PRIu64 " -> %" PRIu64 " KiB)", "server",
                            (static_cast<double>(*server_rss1) - static_cast<double>(server_rss0)) * 1024.0 / o.sessions,
                            server_rss0, *server_rss1);
                if (a.server_cpu && b.server_cpu && secs > 0) {
                    std::printf(", %.2f%% CPU over the hold", (*b.server_cpu - *a.server_cpu) / secs * 100.0);
                }
                std::printf("\n");
            }
        } else {
            const char* unit = s.mode == bench_mode::churn ? "session" : "message";
            const double scale = s.mode == bench_mode::churn ? 1e6 : 1e9;
            const char* u = s.mode == bench_mode::churn ? "us" : "ns";
            std::printf("  %-20s %.2f s (%.0f%% of a core) = %.0f %s per %s\n", "client CPU", client_cpu,
                        secs > 0 ? client_cpu / secs * 100.0 : 0.0,
                        n != 0 ? client_cpu * scale / static_cast<double>(n) : 0.0, u, unit);
            if (a.server_cpu && b.server_cpu) {
                const double sc = *b.server_cpu - *a.server_cpu;
                std::printf("  %-20s %.2f s (%.0f%% of a core) = %.0f %s per %s\n", "server CPU", sc,
                            secs > 0 ? sc / secs * 100.0 : 0.0, n != 0 ? sc * scale / static_cast<double>(n) : 0.0, u,
                            unit);
            }
        }
        std::fflush(stdout);
    }
    if (!ok) {
        std::fprintf(stderr, "lariv bench: FAIL: %s\n", g_fail_msg.c_str());
        return g_fail_code;
    }
    return exit_ok;
}

}  // namespace lariv::tools
