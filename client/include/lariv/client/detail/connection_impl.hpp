// lariv/client/detail/connection_impl.hpp — the connection's state machine, compiled once
// (src/connection_impl.cpp). Not part of the API: use lariv::client::connection.
//
// Every member below the "strand only" line is touched only on strand_. The public front
// (connection.hpp) reaches it through the post_* members, which may be called from any thread.
// Handlers of the user are type-erased into op_base objects; completing one posts the user's
// handler to its associated executor, never runs it inline.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/strand.hpp>

#include "lariv/client/error.hpp"
#include "lariv/protocol/decoder.hpp"
#include "lariv/protocol/json.hpp"
#include "lariv/protocol/limits.hpp"
#include "lariv/protocol/session_id.hpp"

namespace lariv::client {

/// What async_connect sends in HELLO.
struct hello_options {
    std::string name;      ///< shown by INFO and LIST
    std::string auth;      ///< the server's auth_token or admin_token ("" = none)
    /// HELLO's `verbose`. This client tags every SEND with a token, so the server answers each
    /// with an ACK either way; the flag is passed on for completeness.
    bool verbose = false;
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

    // ---- any thread: snapshots ----
    [[nodiscard]] bool is_open() const noexcept { return open_.load(std::memory_order_acquire); }
    [[nodiscard]] bool draining() const noexcept { return draining_.load(std::memory_order_acquire); }
    [[nodiscard]] std::uint64_t send_failures() const noexcept {
        return send_failures_.load(std::memory_order_relaxed);
    }
    /// Written on the strand before the connect handler is posted: read it after that handler.
    [[nodiscard]] const protocol::hello_reply& hello() const noexcept { return hello_; }

private:
    enum class state : std::uint8_t { idle, connecting, handshaking, open, quitting, closed };
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
    void on_connected(std::error_code ec, const hello_options& h);
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
    void fail(std::error_code ec);  // the connection ends; every pending operation completes
    void finish(op_ptr& op, std::error_code ec, reply_data d = {});
    void set_state(state s) noexcept;

    asio::any_io_executor ex_;  // the user's: fallback for handlers without an executor
    asio::strand<asio::any_io_executor> strand_;
    connection_options opts_;
    std::atomic<std::uint64_t> tickets_{1};
    std::atomic<bool> open_{false};
    std::atomic<bool> draining_{false};
    std::atomic<std::uint64_t> send_failures_{0};
    protocol::hello_reply hello_;

    state state_ = state::idle;
    std::error_code end_;  // why the connection ended (when closed)
    asio::ip::tcp::resolver resolver_;
    asio::ip::tcp::socket socket_;
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
    std::string writing_;   // the frames of the write in flight
    std::vector<op_ptr> out_waiters_;      // async_send ops whose frame is in out_
    std::vector<op_ptr> writing_waiters_;  // ... in writing_
    bool writing_now_ = false;

    std::array<char, 64 * 1024> rbuf_{};
    std::size_t rpos_ = 0;  // decoded up to here
    std::size_t rlen_ = 0;  // bytes in rbuf_
    bool reading_ = false;
};

}  // namespace detail
}  // namespace lariv::client
