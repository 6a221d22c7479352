// lariv_tpr_relay — a host with its own binary protocol whose connections are registry sessions.
//
// The host is an ordinary Asio server: its own io_context run by --threads threads (default 2),
// one lariv::server::registry on that io_context's executor, and two acceptors on loopback:
//   --tpr-port (default 7431)    "TPR" clients, the host's own protocol (below). Each connection
//                                is a `tpr_session`, registered with registry::attach();
//   --lariv-port (default 7432)  Lariv-protocol clients (protocol/PROTOCOL.md): each socket is
//                                handed to registry::adopt() and the registry speaks with it.
// Both kinds share the one registry, so they route to each other in both directions:
//   a Lariv client's `SEND <tpr-id> <n>` reaches the TPR client as a frame from the Lariv id;
//   a TPR client's frame to a Lariv id reaches that client as `MSG <tpr-id> <n>`.
//
// TPR framing (both directions; every integer big-endian):
//
//   frame   = length:u32 | id:16 bytes | payload:(length - 16) bytes
//
//   length  the byte count of what follows it (id + payload): 16 <= length <= 16 + 1 MiB.
//           A client frame outside that range is a protocol error: the relay closes at once.
//   id      a 128-bit session id in its canonical 16-byte form (lariv::protocol::session_id::
//           to_bytes: hi then lo, each big-endian; the same id a Lariv client sees as 32 hex
//           digits).
//   client -> relay   id = the destination; the payload is routed with registry::send().
//   relay -> client   id = the sender, with two special frames:
//     - right after connect, one frame carrying the client's OWN id and an empty payload
//       ("your id": give it to peers so they can send to you);
//     - a frame from the all-zero id (never issued: node ids are non-zero) is the relay's answer
//       to a client frame it could not route; its payload is the error code's wire name
//       (PROTOCOL.md section 7), e.g. "unknown_session", "stale_session", "queue_full",
//       "draining". If the registry is full at connect, or shutting down, the client gets one
//       such frame ("server_full" / "draining") instead of its id, then the relay closes.
//   Per sender and target, frames arrive in the order they were sent. Each session's outbound
//   queue is bounded (1 MiB; a frame always fits an empty queue): a message routed to a full
//   queue is refused and its sender told queue_full.
//
// Shutdown: registry::async_shutdown(grace, token) drains both kinds of session (SIGINT/SIGTERM
// uses a callback; the selftest co_spawns a coroutine that co_awaits it with use_awaitable, or,
// where Asio has no coroutines (clang 14 with libstdc++ 12: the sanitizer builds), uses
// asio::use_future).
//
// --selftest [--stop-order registry-first|io-first|together|drain]: binds ephemeral ports,
// connects a Lariv client and TPR clients to itself, routes 1000 messages each way and checks
// content, order and sender ids exactly, checks the error frames, then stops. Without
// --stop-order: a graceful async_shutdown with the clients idle. With it, while both clients keep
// routing to each other and short-lived connections come and go on both ports:
//   registry-first  destroy the registry while the io threads run; then stop io, join;
//   io-first        io.stop(), join; then destroy the registry; then the io_context;
//   together        one thread destroys the registry while another calls io.stop();
//   drain           a graceful async_shutdown, which must complete within its grace.
// Every order must free every session (LeakSanitizer checks in the asan build). Exits 0, or 1
// on any failure; a watchdog bounds the run.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <asio/co_spawn.hpp>  // co_spawn/use_awaitable need ASIO_HAS_CO_AWAIT (not clang 14 + libstdc++ 12)
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/read.hpp>
#include <asio/signal_set.hpp>
#include <asio/strand.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>
#include <asio/write.hpp>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "lariv/protocol/decoder.hpp"
#include "lariv/protocol/encoder.hpp"
#include "lariv/protocol/json.hpp"
#include "lariv/server/host_session.hpp"
#include "lariv/server/registry.hpp"

namespace {

using asio::ip::tcp;
namespace srv = lariv::server;
namespace proto = lariv::protocol;
using namespace std::chrono_literals;

// ------------------------------------------------------------------------------ TPR framing

constexpr std::size_t id_size = proto::session_id::byte_size;  // 16
constexpr std::size_t header_size = 4;
constexpr std::size_t max_payload = std::size_t{1} << 20;
constexpr std::size_t max_frame_length = id_size + max_payload;  // the largest `length` field
constexpr std::size_t max_queue_bytes = std::size_t{1} << 20;    // per session, outbound
/// The sender of the relay's own error frames: all zero, never issued to a session.
constexpr proto::session_id relay_id{};

void put_be32(std::string& out, std::uint32_t v) {
    const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                       static_cast<char>(v >> 8), static_cast<char>(v)};
    out.append(b, 4);
}

std::uint32_t get_be32(const char* p) {
    const auto* u = reinterpret_cast<const unsigned char*>(p);
    return (std::uint32_t{u[0]} << 24) | (std::uint32_t{u[1]} << 16) | (std::uint32_t{u[2]} << 8) |
           std::uint32_t{u[3]};
}

void append_frame(std::string& out, proto::session_id id, std::string_view payload) {
    put_be32(out, static_cast<std::uint32_t>(id_size + payload.size()));
    const auto b = id.to_bytes();
    out.append(reinterpret_cast<const char*>(b.data()), b.size());
    out.append(payload);
}

proto::session_id read_id(const char* p) {
    std::array<std::byte, id_size> b{};
    std::memcpy(b.data(), p, id_size);
    return proto::session_id::from_bytes(b);
}

// ------------------------------------------------------------------------------ host state

/// The small piece of host state that sessions share: the registry, behind a reader-writer lock.
///
/// Why: a tpr_session lives as long as its pending handlers (and the registry's shared_ptr to it
/// until detach), which can be longer than the registry object: "registry-first" destroys the
/// registry while handlers still run; "io-first" leaves handlers queued in a stopped io_context
/// until it is destroyed. So a session must never hold a plain registry&. It holds a
/// std::weak_ptr<relay_hub>, and every use of the registry goes through with(), which runs under
/// a shared lock and finds out if the registry is gone. destroy_registry() takes the registry out
/// under the exclusive lock (so no use is in flight, and none starts after) and destroys it
/// outside the lock: ~registry calls tpr_session::close(), which only posts, so nothing it calls
/// can come back for the lock.
///
/// weak_ptr rather than shared_ptr: the host holds the only owning reference, so the registry
/// can never end up destroyed by a session's last handler (possibly inside ~io_context, which
/// must outlive the registry object), and there is no session -> hub -> registry -> session
/// cycle to break.
class relay_hub {
public:
    explicit relay_hub(std::unique_ptr<srv::registry> r)
        : reg_(std::move(r)) {}

    /// Runs f(registry&) under the shared lock; false (f not run) once the registry is gone.
    /// f must not call back into the hub.
    template <class F>
    bool with(F&& f) {
        std::shared_lock lk(mu_);
        if (!reg_) {
            return false;
        }
        std::forward<F>(f)(*reg_);
        return true;
    }

    /// Destroys the registry (idempotent). Safe at any moment, from any thread.
    void destroy_registry() {
        std::unique_ptr<srv::registry> doomed;
        {
            std::unique_lock lk(mu_);
            doomed = std::move(reg_);
        }
        doomed.reset();
    }

private:
    std::shared_mutex mu_;
    std::unique_ptr<srv::registry> reg_;
};

// ------------------------------------------------------------------------------ tpr_session

/// One TPR connection, a registry member (host_session). Everything but deliver(), close(),
/// info() and get_executor() runs on the session's strand (the socket's executor).
class tpr_session : public std::enable_shared_from_this<tpr_session> {
public:
    tpr_session(std::weak_ptr<relay_hub> hub, tcp::socket s)
        : hub_(std::move(hub))
        , socket_(std::move(s))
        , ex_(socket_.get_executor())
        , remote_(peer(socket_)) {
        std::error_code ec;
        socket_.set_option(tcp::no_delay(true), ec);
        live_.fetch_add(1, std::memory_order_relaxed);
    }
    ~tpr_session() { live_.fetch_sub(1, std::memory_order_acq_rel); }
    tpr_session(const tpr_session&) = delete;
    tpr_session& operator=(const tpr_session&) = delete;

    /// tpr_session objects alive (the selftest checks every one was freed).
    static int live() noexcept { return live_.load(std::memory_order_acquire); }

    /// Attaches to the registry and starts reading (on the strand).
    void start() {
        asio::post(ex_, [self = shared_from_this()] { self->begin(); });
    }

    // --- host_session (host_session.hpp): any thread

    [[nodiscard]] asio::any_io_executor get_executor() const { return ex_; }

    srv::deliver_result deliver(proto::session_id from, std::string_view payload) {
        const std::size_t n = header_size + id_size + payload.size();
        bool kick = false;
        {
            std::lock_guard lk(mu_);
            if (closed_) {
                return srv::deliver_result::closed;
            }
            const std::size_t queued = out_.size() + in_flight_;
            if (queued != 0 && queued + n > max_queue_bytes) {
                return srv::deliver_result::queue_full;
            }
            append_frame(out_, from, payload);
            kick = !write_pending_;
            write_pending_ = true;
            // Counted before the frame can be written, so a peer that saw it sees the count.
            msgs_out_.fetch_add(1, std::memory_order_relaxed);
        }
        if (kick) {
            asio::post(ex_, [self = shared_from_this()] { self->do_write(); });
        }
        return srv::deliver_result::ok;
    }

    void close(srv::close_reason why) {
        asio::post(ex_, [self = shared_from_this(), why] { self->on_close(why); });
    }

    [[nodiscard]] srv::host_session_info info() const {
        srv::host_session_info i;
        i.name = "tpr";
        i.remote = remote_;
        {
            std::lock_guard lk(mu_);
            i.queued_bytes = out_.size() + in_flight_;
        }
        i.msgs_in = msgs_in_.load(std::memory_order_relaxed);
        i.msgs_out = msgs_out_.load(std::memory_order_relaxed);
        return i;
    }

private:
    static std::string peer(const tcp::socket& s) {
        std::error_code ec;
        const auto ep = s.remote_endpoint(ec);
        return ec ? std::string("?") : ep.address().to_string() + ":" + std::to_string(ep.port());
    }

    void begin() {
        // The "your id" frame must go out before anything routed to us. deliver() cannot run
        // before attach() returned (host_session.hpp), but may run right after, before we know
        // the id: so queue the frame first with a placeholder id, and patch the id in afterwards.
        // No write can start meanwhile (write_pending_ is set and this strand is busy).
        {
            std::lock_guard lk(mu_);
            append_frame(out_, relay_id, {});
            write_pending_ = true;
        }
        std::optional<proto::session_id> id;
        bool draining = true;
        if (auto hub = hub_.lock()) {
            hub->with([&](srv::registry& r) {
                id = r.attach(shared_from_this());
                draining = r.draining();
            });
        }
        if (!id) {
            // Never attached (full, draining, or the registry is gone): say why, flush, close.
            // Nothing to detach.
            {
                std::lock_guard lk(mu_);
                out_.clear();
                append_frame(out_, relay_id, draining ? "draining" : "server_full");
                closed_ = true;
                close_after_flush_ = true;
                drain_reason_ = srv::close_reason::server_full;
            }
            do_write();
            return;
        }
        id_ = *id;
        attached_ = true;
        {
            std::lock_guard lk(mu_);
            const auto b = id_.to_bytes();
            std::memcpy(out_.data() + header_size, b.data(), b.size());
        }
        do_write();
        read_header();
    }

    // --- reading (strand)

    void read_header() {
        asio::async_read(
            socket_, asio::buffer(header_),
            [self = shared_from_this()](std::error_code ec, std::size_t) { self->on_header(ec); });
    }

    /// True when the read loop must stop: the session finished, or the read failed (then it
    /// finishes with client_closed on EOF, io_error otherwise).
    bool read_failed(std::error_code ec) {
        if (finished_) {
            return true;
        }
        if (ec) {
            finish(ec == asio::error::eof ? srv::close_reason::client_closed
                                          : srv::close_reason::io_error);
            return true;
        }
        return false;
    }

    void on_header(std::error_code ec) {
        if (read_failed(ec)) {
            return;
        }
        const std::uint32_t length = get_be32(header_.data());
        if (length < id_size || length > max_frame_length) {
            finish(srv::close_reason::protocol_error);
            return;
        }
        body_.resize(length);
        asio::async_read(
            socket_, asio::buffer(body_),
            [self = shared_from_this()](std::error_code e, std::size_t) { self->on_body(e); });
    }

    void on_body(std::error_code ec) {
        if (read_failed(ec)) {
            return;
        }
        const proto::session_id to = read_id(body_.data());
        const std::string_view payload(body_.data() + id_size, body_.size() - id_size);
        std::optional<proto::error_code> err = proto::error_code::draining;  // registry gone
        // Counted before the message can reach its target (and taken back if it did not).
        msgs_in_.fetch_add(1, std::memory_order_relaxed);
        if (auto hub = hub_.lock()) {
            hub->with([&](srv::registry& r) { err = r.send(to, id_, payload); });
        }
        if (err) {
            msgs_in_.fetch_sub(1, std::memory_order_relaxed);
            if (!reply_error(*err)) {
                return;
            }
        }
        read_header();
    }

    /// Queues an error frame for our own client. False (and the session closed) when the queue
    /// is over its cap: a client that sends but does not read is a slow consumer.
    bool reply_error(proto::error_code code) {
        const std::string_view name = proto::to_string(code);
        bool over = false;
        bool kick = false;
        {
            std::lock_guard lk(mu_);
            if (closed_) {
                return true;  // closing anyway
            }
            const std::size_t queued = out_.size() + in_flight_;
            if (queued != 0 && queued + header_size + id_size + name.size() > max_queue_bytes) {
                over = true;
            } else {
                append_frame(out_, relay_id, name);
                kick = !write_pending_;
                write_pending_ = true;
            }
        }
        if (over) {
            finish(srv::close_reason::slow_consumer);
            return false;
        }
        if (kick) {
            do_write();  // we are on the strand and no write was pending
        }
        return true;
    }

    // --- writing (strand)

    void do_write() {
        if (finished_) {
            return;
        }
        bool done = false;
        {
            std::lock_guard lk(mu_);
            in_flight_ = 0;
            if (out_.empty()) {
                write_pending_ = false;
                done = close_after_flush_;
            } else {
                wbuf_.swap(out_);
                out_.clear();
                in_flight_ = wbuf_.size();
            }
        }
        if (done) {
            finish(drain_reason_);
            return;
        }
        if (wbuf_.empty()) {
            return;
        }
        asio::async_write(
            socket_, asio::buffer(wbuf_),
            [self = shared_from_this()](std::error_code ec, std::size_t) { self->on_write(ec); });
    }

    void on_write(std::error_code ec) {
        wbuf_.clear();
        if (ec) {
            finish(srv::close_reason::io_error);
            return;
        }
        do_write();
    }

    // --- closing (strand)

    void on_close(srv::close_reason why) {
        if (finished_) {
            return;
        }
        if (why == srv::close_reason::draining) {
            // Graceful: accept nothing more, flush what was accepted, then close. The registry's
            // async_shutdown grace bounds it (it closes stragglers with close_reason::shutdown).
            bool flushing = false;
            {
                std::lock_guard lk(mu_);
                closed_ = true;
                close_after_flush_ = true;
                drain_reason_ = why;
                flushing = write_pending_;
            }
            if (!flushing) {
                finish(why);
            }
            return;
        }
        finish(why);
    }

    /// The connection ended: close the socket, then tell the registry (exactly once).
    void finish(srv::close_reason why) {
        if (finished_) {
            return;
        }
        finished_ = true;
        reason_ = why;
        {
            std::lock_guard lk(mu_);
            closed_ = true;
            out_.clear();
            in_flight_ = 0;
        }
        std::error_code ec;
        socket_.shutdown(tcp::socket::shutdown_both, ec);
        socket_.close(ec);
        if (attached_) {
            if (auto hub = hub_.lock()) {
                hub->with([&](srv::registry& r) { r.detach(id_); });
            }
            // else: the registry is gone; its destructor already let go of us.
        }
    }

    static inline std::atomic<int> live_{0};

    const std::weak_ptr<relay_hub> hub_;
    tcp::socket socket_;
    const asio::any_io_executor ex_;  // the socket's strand; copied once, read from any thread
    const std::string remote_;

    // Strand only.
    proto::session_id id_{};
    bool attached_ = false;
    bool finished_ = false;
    srv::close_reason reason_ = srv::close_reason::client_closed;
    std::array<char, header_size> header_{};
    std::string body_;
    std::string wbuf_;  // the write in flight

    // Shared with deliver()/info() (any thread): under mu_.
    mutable std::mutex mu_;
    std::string out_;             // frames waiting for the next write
    std::size_t in_flight_ = 0;   // bytes of the write in flight
    bool write_pending_ = false;  // a do_write is posted or a write is in flight
    bool closed_ = false;         // deliver() refuses from now on
    bool close_after_flush_ = false;
    srv::close_reason drain_reason_ = srv::close_reason::draining;

    std::atomic<std::uint64_t> msgs_in_{0};
    std::atomic<std::uint64_t> msgs_out_{0};
};

static_assert(srv::host_session<tpr_session>);

// ------------------------------------------------------------------------------ the host

struct host_options {
    std::uint16_t tpr_port = 7431;
    std::uint16_t lariv_port = 7432;
};

/// The relay: io_context, registry (inside the hub), two acceptors, the threads. The teardown
/// steps are public so that the selftest can run them in any order; the destructor runs them in
/// the clean one.
class relay_host {
public:
    explicit relay_host(const host_options& o)
        : io_(std::in_place)
        , hub_(std::make_shared<relay_hub>(
              std::make_unique<srv::registry>(io_->get_executor(), make_options())))
        , tpr_acceptor_(std::in_place, asio::make_strand(*io_))
        , lariv_acceptor_(std::in_place, asio::make_strand(*io_)) {
        listen(*tpr_acceptor_, o.tpr_port);
        listen(*lariv_acceptor_, o.lariv_port);
        tpr_port_ = tpr_acceptor_->local_endpoint().port();
        lariv_port_ = lariv_acceptor_->local_endpoint().port();
    }
    ~relay_host() {
        destroy_registry();
        stop_io();
        join();
        destroy_io();
    }
    relay_host(const relay_host&) = delete;
    relay_host& operator=(const relay_host&) = delete;

    void start(unsigned threads) {
        // The guard keeps io_->run() going while the io_context has nothing to do for a moment
        // (acceptors closed, no session left) until stop_io(): a graceful shutdown still needs
        // the threads to run its completion.
        work_.emplace(io_->get_executor());
        asio::post(tpr_acceptor_->get_executor(), [this] { accept_tpr(); });
        asio::post(lariv_acceptor_->get_executor(), [this] { accept_lariv(); });
        for (unsigned i = 0; i < threads; ++i) {
            threads_.emplace_back([this] { io_->run(); });
        }
    }

    [[nodiscard]] std::uint16_t tpr_port() const noexcept { return tpr_port_; }
    [[nodiscard]] std::uint16_t lariv_port() const noexcept { return lariv_port_; }
    relay_hub& hub() noexcept { return *hub_; }

    /// Closes both acceptors (on their strands, where their handlers run).
    void stop_accepting() {
        for (auto* a : {&*tpr_acceptor_, &*lariv_acceptor_}) {
            asio::post(a->get_executor(), [a] {
                std::error_code ec;
                a->close(ec);
            });
        }
    }

    /// Graceful stop: stop accepting, then the registry's async_shutdown. The future is ready
    /// when every session is closed; get() throws std::system_error (timed_out) when the grace
    /// ran out and the stragglers were closed at once. Destroying the registry while it is
    /// pending must complete it too (tests/embed/test_shutdown_after_destroy.cpp: a registry
    /// bug, found with these stop orders, left it pending forever once a host session attached).
    std::future<void> shutdown_gracefully(std::chrono::milliseconds grace) {
        stop_accepting();
#if defined(ASIO_HAS_CO_AWAIT)
        // A coroutine co_awaits it with use_awaitable; co_spawn hands its end to a future.
        return asio::co_spawn(*io_, drain(hub_, grace), asio::use_future);
#else
        // No Asio coroutines with this compiler (clang 14 with libstdc++ 12): the same
        // operation with asio::use_future directly.
        std::future<void> f;
        if (!hub_->with([&](srv::registry& r) { f = r.async_shutdown(grace, asio::use_future); })) {
            std::promise<void> gone;  // the registry is already destroyed: nothing to drain
            gone.set_value();
            f = gone.get_future();
        }
        return f;
#endif
    }

    // --- teardown steps, in any order (the selftest's --stop-order)

    /// Safe at any moment, from any thread, with the io_context running or not.
    void destroy_registry() {
        hub_->destroy_registry();
    }
    void stop_io() {
        work_.reset();
        if (io_) {
            io_->stop();
        }
    }
    void join() {
        for (auto& t : threads_) {
            t.join();
        }
        threads_.clear();
    }
    /// After join(). The io_context must outlive the registry object, so this destroys the
    /// registry first if it is still there; then the acceptors, then the io_context, which
    /// destroys the handlers still queued in it, and with them the sessions they hold.
    void destroy_io() {
        if (!io_) {
            return;
        }
        destroy_registry();
        work_.reset();  // before the io_context it counts work on
        tpr_acceptor_.reset();
        lariv_acceptor_.reset();
        io_.reset();
    }

private:
    static srv::registry_options make_options() {
        srv::registry_options c;
        c.node_id = 22;
        c.max_sessions = 1000;
        c.registry_buffer = 64;
        c.heartbeat_ms = 10000;
        return c;
    }

    static void listen(tcp::acceptor& a, std::uint16_t port) {
        const tcp::endpoint ep(asio::ip::address_v4::loopback(), port);
        a.open(ep.protocol());
        a.set_option(tcp::acceptor::reuse_address(true));
        a.bind(ep);
        a.listen();
    }

#if defined(ASIO_HAS_CO_AWAIT)
    static asio::awaitable<void> drain(std::shared_ptr<relay_hub> hub,
                                       std::chrono::milliseconds grace) {
        std::optional<asio::awaitable<void>> op;
        // async_shutdown's initiation copies the registry's shared core into the awaitable, so it
        // stays valid even if the registry object is destroyed before we co_await it.
        // (The lambda and the co_await are separate statements: g++ 12 miscompiles a capturing
        // lambda inside a co_await expression.)
        const bool have = hub->with(
            [&](srv::registry& r) { op.emplace(r.async_shutdown(grace, asio::use_awaitable)); });
        if (have) {
            co_await std::move(*op);  // throws std::system_error(timed_out) if the grace ran out
        }
    }
#endif

    void accept_tpr() {
        // Each TPR socket gets a strand of its own: the session's handlers run serialised on it.
        tpr_acceptor_->async_accept(
            asio::any_io_executor(asio::make_strand(*io_)),
            [this](std::error_code ec, tcp::socket s) {
                if (ec == asio::error::operation_aborted || !tpr_acceptor_->is_open()) {
                    return;
                }
                if (!ec) {
                    std::make_shared<tpr_session>(hub_, std::move(s))->start();
                }
                accept_tpr();
            });
    }

    void accept_lariv() {
        // The registry makes its own strand per session from the socket's executor.
        lariv_acceptor_->async_accept(
            asio::any_io_executor(io_->get_executor()), [this](std::error_code ec, tcp::socket s) {
                if (ec == asio::error::operation_aborted || !lariv_acceptor_->is_open()) {
                    return;
                }
                if (!ec) {
                    // From here on the registry owns it. Registry gone: s closes.
                    hub_->with([&](srv::registry& r) { r.adopt(std::move(s)); });
                }
                accept_lariv();
            });
    }

    // Declaration order = the clean destruction order, reversed: io_context last.
    std::optional<asio::io_context> io_;
    std::shared_ptr<relay_hub> hub_;  // the only owner; sessions hold weak_ptrs
    std::optional<tcp::acceptor> tpr_acceptor_;
    std::optional<tcp::acceptor> lariv_acceptor_;
    std::uint16_t tpr_port_ = 0;
    std::uint16_t lariv_port_ = 0;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
    std::vector<std::thread> threads_;
};

// ------------------------------------------------------------------------------ selftest clients

/// A blocking loopback socket with send and receive timeouts (nothing here can hang forever).
int connect_loopback(std::uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

bool send_all(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
        const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return false;
        }
        bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

/// recv into `rx`: false on EOF, error or timeout.
bool recv_some(int fd, std::string& rx) {
    char buf[16384];
    for (;;) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        rx.append(buf, static_cast<std::size_t>(n));
        return true;
    }
}

struct fd_holder {
    int fd = -1;
    explicit fd_holder(int f)
        : fd(f) {}
    ~fd_holder() {
        if (fd >= 0) {
            ::close(fd);
        }
    }
    fd_holder(const fd_holder&) = delete;
    fd_holder& operator=(const fd_holder&) = delete;
};

/// A TPR client.
struct tpr_client : fd_holder {
    using fd_holder::fd_holder;
    std::string rx;

    /// The next frame; false on EOF, error, timeout or a malformed frame.
    bool read(proto::session_id& id, std::string& payload) {
        for (;;) {
            if (rx.size() >= header_size) {
                const std::uint32_t len = get_be32(rx.data());
                if (len < id_size) {
                    return false;
                }
                if (rx.size() >= header_size + len) {
                    id = read_id(rx.data() + header_size);
                    payload.assign(rx, header_size + id_size, len - id_size);
                    rx.erase(0, header_size + len);
                    return true;
                }
            }
            if (!recv_some(fd, rx)) {
                return false;
            }
        }
    }
};

/// A Lariv-protocol client: replies are copied out of the decoder.
struct lariv_reply {
    enum class kind { msg, err, body, other, closed, bad } what = kind::closed;
    proto::session_id from;
    std::string text;
    proto::error_code code = proto::error_code::internal;
};

struct lariv_client : fd_holder {
    using fd_holder::fd_holder;
    std::string rx;
    proto::reply_decoder dec;

    lariv_reply next() {
        for (;;) {
            lariv_reply out;
            bool have = false;
            bool ping = false;
            if (!rx.empty()) {
                auto r = dec.decode(std::string_view(rx));
                if (r.status == proto::decode_status::good) {
                    have = true;
                    if (const auto* m = std::get_if<proto::deliver_msg>(&r.message)) {
                        out.what = lariv_reply::kind::msg;
                        out.from = m->from;
                        out.text.assign(m->payload);
                    } else if (const auto* e = std::get_if<proto::err_msg>(&r.message)) {
                        out.what = lariv_reply::kind::err;
                        out.code = e->code;
                        out.text.assign(e->message);
                    } else if (const auto* b = std::get_if<proto::body_msg>(&r.message)) {
                        out.what = lariv_reply::kind::body;
                        out.text.assign(b->json);
                    } else if (std::holds_alternative<proto::ping_msg>(r.message)) {
                        ping = true;
                        have = false;
                    } else {
                        out.what = lariv_reply::kind::other;
                    }
                } else if (r.status == proto::decode_status::bad) {
                    have = true;
                    out.what = lariv_reply::kind::bad;
                }
                rx.erase(0, r.consumed);
            }
            if (ping) {
                (void)send_all(fd, "PONG\r\n");
            }
            if (have) {
                return out;
            }
            if (rx.empty() && !recv_some(fd, rx)) {
                out.what = lariv_reply::kind::closed;
                return out;
            }
        }
    }
};

/// Message i of direction `dir`: varied lengths, binary bytes included (NUL, CR LF, 0xff).
std::string payload_for(char dir, int i) {
    std::string p;
    p += dir;
    p += std::to_string(i);
    p += '|';
    const int extra = (i * 37) % 97;
    for (int k = 0; k < extra; ++k) {
        const int v = (i + k) % 7;
        p += v == 0   ? '\0'
             : v == 1 ? '\r'
             : v == 2 ? '\n'
             : v == 3 ? '\xff'
                      : static_cast<char>('a' + (i + k) % 26);
    }
    return p;
}

// ------------------------------------------------------------------------------ selftest

enum class stop_order { graceful, registry_first, io_first, together, drain };

struct checker {
    int failures = 0;
    bool operator()(bool ok, const std::string& what) {
        std::printf("selftest: %s: %s\n", what.c_str(), ok ? "ok" : "FAILED");
        std::fflush(stdout);
        failures += ok ? 0 : 1;
        return ok;
    }
};

/// Clients write and read continuously until stopped (the "traffic in flight" of a stop order):
/// the two connected clients route to each other both ways, and two churn threads keep opening
/// and dropping short-lived connections on both ports (so the stop also meets sessions being
/// accepted, handshaking, attaching and closing).
class traffic {
public:
    traffic(int lariv_fd,
            int tpr_fd,
            proto::session_id lariv_id,
            proto::session_id tpr_id,
            std::uint16_t lariv_port,
            std::uint16_t tpr_port)
        : lariv_fd_(lariv_fd)
        , tpr_fd_(tpr_fd) {
        std::string hello_send = "HELLO {\"name\":\"churn\"}\r\n";
        proto::encode(hello_send, proto::send_msg{tpr_id, "churn", {}});
        std::string tpr_frame;
        append_frame(tpr_frame, lariv_id, "churn");
        threads_.emplace_back(
            [this, lariv_port, b = std::move(hello_send)] { churn_loop(lariv_port, b); });
        threads_.emplace_back(
            [this, tpr_port, b = std::move(tpr_frame)] { churn_loop(tpr_port, b); });
        std::string to_tpr;
        std::string to_lariv;
        for (int i = 0; i < 64; ++i) {
            proto::encode(to_tpr, proto::send_msg{tpr_id, payload_for('L', i), {}});
            append_frame(to_lariv, lariv_id, payload_for('T', i));
        }
        threads_.emplace_back([this, b = std::move(to_tpr)] { write_loop(lariv_fd_, b); });
        threads_.emplace_back([this, b = std::move(to_lariv)] { write_loop(tpr_fd_, b); });
        threads_.emplace_back([this] { read_loop(lariv_fd_, lariv_rx_); });
        threads_.emplace_back([this] { read_loop(tpr_fd_, tpr_rx_); });
    }
    ~traffic() { stop(); }
    traffic(const traffic&) = delete;
    traffic& operator=(const traffic&) = delete;

    /// Both sides have received something: messages are flowing both ways.
    bool flowing(std::chrono::milliseconds within) const {
        const auto end = std::chrono::steady_clock::now() + within;
        while (std::chrono::steady_clock::now() < end) {
            if (lariv_rx_.load() > 4096 && tpr_rx_.load() > 4096 && churned_.load() >= 20) {
                return true;
            }
            std::this_thread::sleep_for(1ms);
        }
        return false;
    }
    /// Stops the clients: shutdown() wakes any blocked send/recv; the fds are closed by their
    /// owners.
    void stop() {
        stop_.store(true);
        ::shutdown(lariv_fd_, SHUT_RDWR);
        ::shutdown(tpr_fd_, SHUT_RDWR);
        for (auto& t : threads_) {
            t.join();
        }
        threads_.clear();
    }
    [[nodiscard]] std::uint64_t lariv_bytes() const { return lariv_rx_.load(); }
    [[nodiscard]] std::uint64_t tpr_bytes() const { return tpr_rx_.load(); }
    [[nodiscard]] std::uint64_t churned() const { return churned_.load(); }

private:
    void churn_loop(std::uint16_t port, const std::string& first_words) {
        for (unsigned n = 0; !stop_.load(); ++n) {
            const int fd = connect_loopback(port);
            if (fd < 0) {
                std::this_thread::sleep_for(1ms);  // the acceptors are gone
                continue;
            }
            if (n % 3 != 0) {  // every third one leaves without a word
                (void)send_all(fd, first_words);
            }
            if (n % 2 == 0) {  // half of them reset instead of closing
                linger l{1, 0};
                ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
            }
            ::close(fd);
            churned_.fetch_add(1);
        }
    }

    void write_loop(int fd, const std::string& batch) {
        while (!stop_.load() && send_all(fd, batch)) {
        }
    }
    void read_loop(int fd, std::atomic<std::uint64_t>& count) {
        char buf[16384];
        while (!stop_.load()) {
            const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) {
                return;
            }
            if (n > 0) {
                count.fetch_add(static_cast<std::uint64_t>(n));
            }
        }
    }

    int lariv_fd_;
    int tpr_fd_;
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> lariv_rx_{0};
    std::atomic<std::uint64_t> tpr_rx_{0};
    std::atomic<std::uint64_t> churned_{0};
    std::vector<std::thread> threads_;
};

int selftest(stop_order order, unsigned threads) {
    // Bound the whole run: a hang is a failure, not a stuck CI job.
    std::thread([] {
        std::this_thread::sleep_for(std::chrono::seconds(40));
        std::fprintf(stderr, "selftest: timed out\n");
        std::_Exit(1);
    }).detach();

    checker check;
    constexpr int n_msgs = 1000;
    auto h = std::make_unique<relay_host>(host_options{0, 0});
    h->start(threads);

    // A Lariv-protocol client joins through the Lariv port.
    lariv_client lc(connect_loopback(h->lariv_port()));
    check(lc.fd >= 0, "Lariv client connected");
    (void)send_all(lc.fd, "HELLO {\"name\":\"selftest\"}\r\n");
    const lariv_reply hello = lc.next();
    proto::session_id lariv_id{};
    if (hello.what == lariv_reply::kind::body) {
        if (auto j = proto::parse_json(hello.text, proto::limits{})) {
            if (auto id = proto::session_id::parse(j->value("session", ""))) {
                lariv_id = *id;
            }
        }
    }
    check(lariv_id.node() == 22, "HELLO answered with a session id of node 22");

    // A TPR client: its first frame is its own id, empty payload.
    tpr_client tc(connect_loopback(h->tpr_port()));
    check(tc.fd >= 0, "TPR client connected");
    proto::session_id tpr_id{};
    std::string payload;
    check(tc.read(tpr_id, payload) && payload.empty() && tpr_id.node() == 22 && tpr_id != lariv_id,
          "TPR client got its own id first");

    // 1000 messages each way, both directions at once.
    {
        std::string to_tpr;
        std::string to_lariv;
        for (int i = 0; i < n_msgs; ++i) {
            proto::encode(to_tpr, proto::send_msg{tpr_id, payload_for('L', i), {}});
            append_frame(to_lariv, lariv_id, payload_for('T', i));
        }
        std::thread w1([&] { (void)send_all(lc.fd, to_tpr); });
        std::thread w2([&] { (void)send_all(tc.fd, to_lariv); });
        int good = 0;
        for (int i = 0; i < n_msgs; ++i) {
            proto::session_id from;
            if (!tc.read(from, payload) || from != lariv_id || payload != payload_for('L', i)) {
                std::printf("selftest: TPR frame %d: from %s, %zu bytes\n", i,
                            from.to_string().c_str(), payload.size());
                break;
            }
            ++good;
        }
        check(good == n_msgs, "1000 Lariv -> TPR messages, in order, from the Lariv id");
        good = 0;
        for (int i = 0; i < n_msgs; ++i) {
            const lariv_reply r = lc.next();
            if (r.what != lariv_reply::kind::msg || r.from != tpr_id ||
                r.text != payload_for('T', i)) {
                std::printf("selftest: Lariv reply %d: kind %d, from %s, %zu bytes\n", i,
                            static_cast<int>(r.what), r.from.to_string().c_str(), r.text.size());
                break;
            }
            ++good;
        }
        check(good == n_msgs, "1000 TPR -> Lariv messages, in order, from the TPR id");
        w1.join();
        w2.join();
    }

    // The registry describes the TPR session from its info(): INFO over the Lariv protocol.
    {
        std::string q;
        proto::encode(q, proto::info_msg{tpr_id});
        (void)send_all(lc.fd, q);
        const lariv_reply r = lc.next();
        std::optional<proto::session_info> si;
        if (r.what == lariv_reply::kind::body) {
            si = proto::parse_body<proto::session_info>(r.text, proto::limits{});
        }
        check(si && si->id == tpr_id && si->name == "tpr" && si->msgs_in == n_msgs &&
                  si->msgs_out == n_msgs,
              "INFO <tpr-id>: name tpr, 1000 messages in and out");
    }

    // A frame to a made-up id gets the error frame; so does a Lariv SEND to it.
    const auto made_up = proto::session_id::make(0xdead, 1, 2, 3);
    {
        std::string f;
        append_frame(f, made_up, "nobody");
        (void)send_all(tc.fd, f);
        proto::session_id from;
        check(tc.read(from, payload) && from == relay_id && payload == "unknown_session",
              "TPR frame to a made-up id: error frame unknown_session");
        std::string s;
        proto::encode(s, proto::send_msg{made_up, "nobody", {}});
        (void)send_all(lc.fd, s);
        const lariv_reply r = lc.next();
        check(r.what == lariv_reply::kind::err && r.code == proto::error_code::unknown_session,
              "Lariv SEND to a made-up id: -ERR unknown_session");
    }

    // TPR to TPR, and a protocol error closes only the offender.
    {
        tpr_client t2(connect_loopback(h->tpr_port()));
        proto::session_id t2_id;
        check(t2.read(t2_id, payload) && payload.empty() && t2_id != tpr_id,
              "second TPR client got its id");
        std::string f;
        append_frame(f, tpr_id, "from t2");
        (void)send_all(t2.fd, f);
        proto::session_id from;
        check(tc.read(from, payload) && from == t2_id && payload == "from t2", "TPR -> TPR routed");

        tpr_client bad(connect_loopback(h->tpr_port()));
        proto::session_id bad_id;
        (void)bad.read(bad_id, payload);
        (void)send_all(bad.fd, std::string("\xff\xff\xff\xff", 4));
        check(!bad.read(from, payload), "oversized TPR frame: connection closed");
        // The closed session left the registry: its id is no longer routable.
        std::string g;
        append_frame(g, bad_id, "late");
        bool refused = false;
        for (int i = 0; i < 200 && !refused; ++i) {
            (void)send_all(tc.fd, g);
            refused = tc.read(from, payload) && from == relay_id && payload == "stale_session";
            if (!refused) {
                std::this_thread::sleep_for(5ms);
            }
        }
        check(refused, "closed TPR session's id: stale_session");
    }

    if (order == stop_order::graceful) {
        auto done = h->shutdown_gracefully(3s);
        bool clean = false;
        if (done.wait_for(10s) == std::future_status::ready) {
            try {
                done.get();
                clean = true;
            } catch (const std::system_error& e) {
                std::printf("selftest: async_shutdown: %s\n", e.what());
            }
        }
#if defined(ASIO_HAS_CO_AWAIT)
        check(clean, "async_shutdown (co_spawn, use_awaitable) drained everyone within the grace");
#else
        check(clean, "async_shutdown (use_future) drained everyone within the grace");
#endif
        lariv_reply r;
        do {
            r = lc.next();
        } while (r.what != lariv_reply::kind::closed && r.what != lariv_reply::kind::bad);
        check(r.what == lariv_reply::kind::closed, "Lariv client closed by the drain");
        proto::session_id from;
        check(!tc.read(from, payload), "TPR client closed by the drain");
        h.reset();  // the clean order: registry, io stop, join, io_context
    } else {
        traffic t(lc.fd, tc.fd, lariv_id, tpr_id, h->lariv_port(), h->tpr_port());
        check(t.flowing(5s), "traffic flowing both ways, short connections coming and going");
        const char* name = "";
        switch (order) {
            case stop_order::registry_first:
                name = "registry first";
                h->destroy_registry();  // io threads still running, sessions mid-I/O
                h->stop_io();
                h->join();
                h->destroy_io();
                break;
            case stop_order::io_first:
                name = "io first";
                h->stop_io();
                h->join();
                h->destroy_registry();  // nothing runs: handlers stay queued in the io_context
                h->destroy_io();
                break;
            case stop_order::together: {
                name = "together";
                std::latch go(2);
                std::thread killer([&] {
                    go.arrive_and_wait();
                    h->destroy_registry();
                });
                go.arrive_and_wait();
                h->stop_io();
                killer.join();
                h->join();
                h->destroy_io();
                break;
            }
            case stop_order::drain: {
                name = "by a graceful drain";
                auto done = h->shutdown_gracefully(5s);
                bool clean = false;
                if (done.wait_for(15s) == std::future_status::ready) {
                    try {
                        done.get();
                        clean = true;
                    } catch (const std::system_error& e) {
                        std::printf("selftest: async_shutdown: %s\n", e.what());
                    }
                }
                check(clean,
                      "async_shutdown with traffic in flight drained everyone within the grace");
                h->stop_io();
                h->join();
                h->destroy_io();
                break;
            }
            case stop_order::graceful:
                break;
        }
        t.stop();
        std::printf(
            "selftest: stopped %s with traffic in flight (%llu bytes to Lariv, %llu to TPR, %llu "
            "short connections)\n",
            name, static_cast<unsigned long long>(t.lariv_bytes()),
            static_cast<unsigned long long>(t.tpr_bytes()),
            static_cast<unsigned long long>(t.churned()));
        h.reset();
    }
    check(tpr_session::live() == 0, "every tpr_session freed");
    std::printf("selftest: %s\n", check.failures == 0 ? "PASSED" : "FAILED");
    return check.failures == 0 ? 0 : 1;
}

int usage(const char* argv0) {
    std::fprintf(stderr,
                 "usage: %s [--tpr-port N] [--lariv-port N] [--threads N]\n"
                 "       %s --selftest [--stop-order registry-first|io-first|together|drain] "
                 "[--threads N]\n",
                 argv0, argv0);
    return 64;
}

}  // namespace

int main(int argc, char** argv) {
    host_options opts;
    unsigned threads = 2;
    bool self = false;
    stop_order order = stop_order::graceful;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--selftest") {
            self = true;
        } else if (a == "--stop-order" && i + 1 < argc) {
            const std::string v = argv[++i];
            if (v == "registry-first") {
                order = stop_order::registry_first;
            } else if (v == "io-first") {
                order = stop_order::io_first;
            } else if (v == "together") {
                order = stop_order::together;
            } else if (v == "drain") {
                order = stop_order::drain;
            } else {
                return usage(argv[0]);
            }
        } else if ((a == "--tpr-port" || a == "--lariv-port") && i + 1 < argc) {
            const auto v = static_cast<std::uint16_t>(std::strtoul(argv[++i], nullptr, 10));
            (a == "--tpr-port" ? opts.tpr_port : opts.lariv_port) = v;
        } else if (a == "--threads" && i + 1 < argc) {
            threads = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
            if (threads == 0) {
                return usage(argv[0]);
            }
        } else {
            return usage(argv[0]);
        }
    }
    // The registry logs through spdlog's default logger, from the I/O threads. Make it exist
    // before any thread does: its lazy creation on first use is thread-safe, but ThreadSanitizer
    // cannot see that inside the system's uninstrumented libspdlog and reports a race.
    spdlog::set_level(self ? spdlog::level::warn : spdlog::level::info);
    if (self) {
        return selftest(order, threads);
    }
    if (order != stop_order::graceful) {
        return usage(argv[0]);
    }
    try {
        relay_host h(opts);
        h.start(threads);
        std::printf("TPR clients: port %u; Lariv-protocol clients: nc -C localhost %u\n",
                    h.tpr_port(), h.lariv_port());
        std::fflush(stdout);
        asio::io_context sigio;
        asio::signal_set signals(sigio, SIGINT, SIGTERM);
        signals.async_wait([](std::error_code, int) {});
        sigio.run();
        // Graceful stop with a plain callback: it runs on the registry's executor, exactly once.
        h.stop_accepting();
        // shared: the callback may still be inside set_value() when get() returns here.
        auto done = std::make_shared<std::promise<std::error_code>>();
        auto result = done->get_future();
        const bool started = h.hub().with([&](srv::registry& r) {
            r.async_shutdown(std::chrono::milliseconds(r.options().drain_timeout_ms),
                             [done](std::error_code ec) { done->set_value(ec); });
        });
        if (started) {
            const std::error_code ec = result.get();
            std::printf("drained%s\n", ec ? " (grace ran out: stragglers closed)" : "");
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 70;
    }
    return 0;
}
