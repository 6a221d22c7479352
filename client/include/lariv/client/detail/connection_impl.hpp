// lariv/client/detail/connection_impl.hpp — the connection's state machine, compiled once
// (src/connection_impl.cpp). Not part of the API: use lariv::client::connection.
//
// Every member below the "strand only" line is touched only on strand_. The public front
// (connection.hpp) reaches it through the post_* members, which may be called from any thread.
// Handlers of the user are type-erased into op_base objects; completing one posts the user's
// handler to its associated executor, never runs it inline.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>

#include "lariv/client/error.hpp"
#include "lariv/protocol/decoder.hpp"
#include "lariv/protocol/json.hpp"
#include "lariv/protocol/limits.hpp"
#include "lariv/protocol/session_id.hpp"

namespace asio::ssl {
class context;  // <asio/ssl/context.hpp>: only the TLS users need it
}  // namespace asio::ssl

namespace lariv::client {

/// What async_connect sends in HELLO.
struct hello_options {
    std::string name;      ///< shown by INFO and LIST
    std::string auth;      ///< the server's auth_token or admin_token ("" = none)
    /// HELLO's `verbose`. This client tags every SEND with a token, so the server answers each
    /// with an ACK either way; the flag is passed on for completeness.
    bool verbose = false;
};

/// TLS to the server (connection_options::tls): asio::ssl (OpenSSL), TLS 1.2 or 1.3.
struct tls_options {
    /// A context of the caller's, used as it is: its verify mode, trust store and certificate.
    /// When it verifies peers (verify_peer), the server's certificate is also checked for
    /// `server_name`. Set: ca_file, cert_file, key_file and verify_peer are ignored.
    std::shared_ptr<asio::ssl::context> context;
    /// PEM CA bundle the server's certificate must chain to ("" = OpenSSL's default paths).
    std::string ca_file;
    /// Client certificate chain (PEM) for servers that require one (mTLS); "" = none.
    std::string cert_file;
    /// Its private key (PEM, unencrypted); "" = in cert_file.
    std::string key_file;
    /// Verify the server's certificate (chain and host name). false: no verification at all,
    /// anyone in the path can impersonate the server (testing only).
    bool verify_peer = true;
    /// The name sent as SNI (not for an IP address) and verified against the certificate
    /// ("" = the host given to async_connect).
    std::string server_name;
};

/// Reconnecting after the connection dropped (connection_options::reconnect). Off by default.
/// Attempt k (1, 2, ...) of one reconnect starts backoff_delay(policy, k, r) after the drop or
/// the failure of attempt k-1: min(max_delay, initial_delay * multiplier^(k-1)), less a random
/// part of up to `jitter` of it, so many clients dropped at once do not come back at once.
struct reconnect_policy {
    bool enabled = false;
    std::chrono::milliseconds initial_delay{100};
    std::chrono::milliseconds max_delay{5000};
    double multiplier = 2.0;  ///< below 1 counts as 1
    double jitter = 0.2;      ///< fraction in [0, 1]: a delay d becomes d * (1 - jitter * U[0,1))
    /// Attempts per drop before giving up (the connection then closes with the last attempt's
    /// error); 0 = unlimited. The count starts again after each successful reconnect.
    std::uint32_t max_attempts = 0;
};

/// The delay before attempt `attempt` (1-based) of a reconnect, with `random01` in [0, 1)
/// drawing the jitter: min(max_delay, initial_delay * multiplier^(attempt-1)) * (1 - jitter *
/// random01), so within [(1 - jitter) * base, base]. Deterministic (the tests check the schedule).
[[nodiscard]] std::chrono::milliseconds backoff_delay(const reconnect_policy& p, std::uint32_t attempt,
                                                      double random01) noexcept;

/// What a reconnecting connection reports to its on_reconnect handler.
struct reconnect_event {
    enum class kind : std::uint8_t {
        lost,            ///< the connection dropped (`error`); the session `old_id` is gone
        attempt_failed,  ///< attempt `attempt` failed with `error`; the next in `next_delay`
        reconnected,     ///< attempt `attempt` connected and HELLOed: the new session is `new_id`
        gave_up,         ///< attempt `attempt` (= max_attempts, or a final refusal) failed with
                         ///< `error`: the connection is closed with that error
    };
    kind what = kind::lost;
    std::error_code error;               ///< lost: why; attempt_failed, gave_up: the attempt's
    protocol::session_id old_id;         ///< the session that was lost
    protocol::session_id new_id;         ///< reconnected: the new session (never old_id)
    std::uint32_t attempt = 0;           ///< 1-based; 0 for lost
    std::chrono::milliseconds next_delay{0};  ///< lost, attempt_failed: until the next attempt
};

/// Bounds and socket settings of one connection.
struct connection_options {
    /// Received messages held for async_receive, at most. At the cap the connection stops
    /// reading the socket (the server's queue for this session fills, then TCP pushes back)
    /// until async_receive takes one. While it does not read, replies to commands, ACKs and the
    /// server's PINGs wait too: a connection left at the cap longer than two heartbeats is
    /// closed by the server (reason timeout).
    std::size_t max_receive_queue = 1024;
    /// Payload bytes held for async_receive, at most (the same rule; one message always fits).
    std::size_t max_receive_bytes = 16U << 20;
    /// TCP_NODELAY on the socket.
    bool no_delay = true;
    /// TLS to the server; nullopt: plaintext TCP.
    std::optional<tls_options> tls;
    /// Reconnecting after a drop (off by default; see connection.hpp, "Reconnecting").
    reconnect_policy reconnect;
};

/// A message relayed to this session: MSG <from> <n> + payload.
struct message {
    protocol::session_id from;  ///< the sender's session id
    std::string payload;        ///< the bytes as sent
};

namespace detail {

/// What a completed operation hands to its converter (connection.hpp).
struct reply_data {
    std::string text;  ///< body JSON, or MSG payload
    protocol::session_id from;
    std::chrono::nanoseconds rtt{0};
    const protocol::limits* limits = nullptr;  ///< bounds for parsing `text`
};

/// A pending operation with its user handler, type-erased.
class op_base {
public:
    op_base() = default;
    op_base(const op_base&) = delete;
    op_base& operator=(const op_base&) = delete;
    virtual ~op_base() = default;
    /// Posts the user's handler with the result; called once, on the strand.
    virtual void complete(std::error_code ec, reply_data&& d) = 0;
};
using op_ptr = std::unique_ptr<op_base>;

/// Which reply a command waits for.
enum class command_kind : std::uint8_t { hello, ping, info, list, kick, stats, quit };

class connection_impl : public std::enable_shared_from_this<connection_impl> {
public:
    connection_impl(asio::any_io_executor ex, const connection_options& opts);
    ~connection_impl();
    connection_impl(const connection_impl&) = delete;
    connection_impl& operator=(const connection_impl&) = delete;

    [[nodiscard]] const asio::any_io_executor& executor() const noexcept { return ex_; }
    /// A connection-unique number: names an operation for cancellation; an acked SEND's token.
    [[nodiscard]] std::uint64_t next_ticket() noexcept {
        return tickets_.fetch_add(1, std::memory_order_relaxed);
    }

    // ---- any thread: each posts to the strand ----
    void post_connect(std::string host, std::string port, hello_options h, std::uint64_t ticket, op_ptr op);
    /// `frame` is a complete SEND frame whose token is `ticket`; `acked`: `op` waits for the
    /// ACK, else for the write.
    void post_send(std::string frame, std::size_t payload_size, std::uint64_t ticket, bool acked, op_ptr op);
    void post_command(command_kind k, std::string frame, std::uint64_t ticket, op_ptr op);
    void post_receive(std::uint64_t ticket, op_ptr op);
    void post_close(op_ptr op);
    void post_abort();
    void post_cancel(std::uint64_t ticket);
    void post_reconnect_handler(std::function<void(const reconnect_event&)> h);

    // ---- any thread: snapshots ----
    [[nodiscard]] bool is_open() const noexcept { return open_.load(std::memory_order_acquire); }
    [[nodiscard]] bool draining() const noexcept { return draining_.load(std::memory_order_acquire); }
    [[nodiscard]] bool reconnecting() const noexcept { return reconnecting_.load(std::memory_order_acquire); }
    [[nodiscard]] std::uint64_t send_failures() const noexcept {
        return send_failures_.load(std::memory_order_relaxed);
    }
    /// The current session's +HELLO (a copy: a reconnect replaces it; its session is the null
    /// id while reconnecting).
    [[nodiscard]] protocol::hello_reply hello() const {
        std::lock_guard lk(hello_mu_);
        return public_hello_;
    }
    [[nodiscard]] protocol::session_id id() const {
        std::lock_guard lk(hello_mu_);
        return public_hello_.session;
    }

private:
    struct link;  // one TCP (+ TLS) connection: a reconnect makes a new one (connection_impl.cpp)
    // reconnecting: waiting out a backoff delay (attempts themselves go through connecting and
    // handshaking with in_reconnect_ set).
    enum class state : std::uint8_t { idle, connecting, handshaking, open, quitting, reconnecting, closed };
    struct pending_command {
        command_kind kind;
        std::uint64_t ticket;
        op_ptr op;  // null once cancelled: the reply is still awaited and dropped
        std::chrono::steady_clock::time_point sent;
    };
    struct pending_ack {
        op_ptr op;            // null: async_send's (done at the write), or cancelled
        bool counted = false;  // async_send's: a failure verdict counts in send_failures()
    };
    struct pending_receive {
        std::uint64_t ticket;
        op_ptr op;
    };

    // ---- strand only ----
    void do_connect(std::string host, std::string port, hello_options h, std::uint64_t ticket, op_ptr op);
    void start_attempt();  // a new link: resolve, connect, TLS handshake, HELLO
    void on_connected(const std::shared_ptr<link>& l, std::error_code ec);
    void begin_hello();
    void do_send(std::string frame, std::size_t payload_size, std::uint64_t ticket, bool acked, op_ptr op);
    void do_command(command_kind k, std::string frame, std::uint64_t ticket, op_ptr op);
    void do_receive(std::uint64_t ticket, op_ptr op);
    void do_close(op_ptr op);
    void do_cancel(std::uint64_t ticket);
    void queue_frame(std::string_view bytes, op_ptr write_waiter = nullptr);
    void start_write();
    void on_write(std::error_code ec);
    void start_read();
    void on_read(std::error_code ec, std::size_t n);
    void pump();  // decodes what is buffered in rbuf_, as far as the receive queue allows
    void handle(const protocol::reply& r);
    void handle_err(protocol::error_code code);
    void handle_ack(std::string_view token, std::optional<protocol::error_code> err);
    void handle_body(protocol::body_kind kind, std::string_view json);
    void complete_front(std::error_code ec, reply_data&& d);
    void deliver(message&& m);
    [[nodiscard]] bool receive_full() const noexcept;
    void fail(std::error_code ec);  // the link ends: a reconnect (drop_link) or close_for_good
    [[nodiscard]] bool may_reconnect(std::error_code ec) const noexcept;
    void drop_link(std::error_code ec);
    void on_backoff(std::error_code ec);
    void close_link();
    void fail_in_flight(std::error_code ec);  // commands, ACKs and write waiters
    void close_for_good(std::error_code ec);  // every pending operation completes
    void emit(reconnect_event e);
    void publish_hello(const protocol::hello_reply& h);
    void finish(op_ptr& op, std::error_code ec, reply_data d = {});
    void set_state(state s) noexcept;

    asio::any_io_executor ex_;  // the user's: fallback for handlers without an executor
    asio::strand<asio::any_io_executor> strand_;
    connection_options opts_;
    std::atomic<std::uint64_t> tickets_{1};
    std::atomic<bool> open_{false};
    std::atomic<bool> draining_{false};
    std::atomic<bool> reconnecting_{false};
    std::atomic<std::uint64_t> send_failures_{0};
    mutable std::mutex hello_mu_;
    protocol::hello_reply public_hello_;  // hello_ for other threads, under hello_mu_

    // ---- strand only ----
    protocol::hello_reply hello_;
    state state_ = state::idle;
    std::error_code end_;  // why the connection ended (when closed)
    std::string host_;     // what async_connect was given: every reconnect attempt uses it again
    std::string port_;
    hello_options hello_opts_;
    std::shared_ptr<asio::ssl::context> tls_ctx_;
    asio::ip::tcp::resolver resolver_;
    std::shared_ptr<link> link_;
    protocol::limits limits_;
    protocol::reply_decoder decoder_;

    std::uint64_t connect_ticket_ = 0;
    op_ptr connect_op_;
    std::deque<pending_command> commands_;                // replies come in this order
    std::unordered_map<std::uint64_t, pending_ack> acks_;  // by token (= ticket)
    std::deque<pending_receive> receivers_;
    std::deque<message> received_;
    std::size_t received_bytes_ = 0;

    std::string out_;       // frames queued while a write is in flight
    std::vector<op_ptr> out_waiters_;      // async_send ops whose frame is in out_
    std::vector<op_ptr> writing_waiters_;  // ... in the link's write in flight
    bool writing_now_ = false;

    std::size_t rpos_ = 0;  // decoded up to here in the link's read buffer
    std::size_t rlen_ = 0;  // bytes in it
    bool reading_ = false;

    // Reconnecting (opts_.reconnect).
    bool ever_open_ = false;     // the first HELLO succeeded: only then does a drop reconnect
    bool closing_ = false;       // close(), async_close() or the destructor: no reconnect
    bool in_reconnect_ = false;  // between a drop and the reconnect's +HELLO (or giving up)
    std::uint32_t attempt_ = 0;  // of the reconnect in progress
    protocol::session_id lost_id_;
    asio::steady_timer backoff_;
    std::minstd_rand rng_;
    std::shared_ptr<std::function<void(const reconnect_event&)>> on_reconnect_;
    asio::strand<asio::any_io_executor> events_;  // the on_reconnect handler runs here
};

}  // namespace detail
}  // namespace lariv::client
