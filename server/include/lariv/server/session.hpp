// lariv/server/session.hpp — one client connection: reader, bounded writer queue, deadlines, all
// on its own strand. Created by registry::adopt.
#pragma once

#include <any>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>

#include "lariv/protocol/decoder.hpp"
#include "lariv/protocol/json.hpp"
#include "lariv/server/registry.hpp"

namespace lariv::server {

class session : public std::enable_shared_from_this<session> {
public:
    using clock = std::chrono::steady_clock;

    /// Outcome of queuing a frame for this session.
    enum class enqueue_result { ok, queue_full, closed };

    session(registry& reg, asio::ip::tcp::socket socket);
    ~session();
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    /// This session's id (valid after registration). Thread-safe.
    [[nodiscard]] protocol::session_id id() const noexcept { return id_; }
    /// Client name from HELLO ("" before). Thread-safe once handshaken().
    [[nodiscard]] std::string name() const;
    /// Peer address "ip:port". Thread-safe (immutable).
    [[nodiscard]] const std::string& remote() const noexcept { return remote_; }
    [[nodiscard]] bool handshaken() const noexcept { return handshaken_.load(std::memory_order_acquire); }
    /// The host's own data for this session (embedding). Access it from the hooks, on the
    /// session's strand.
    [[nodiscard]] std::any& user_data() noexcept { return user_data_; }

    /// Queues `MSG <from> <n>` + payload. Thread-safe. Applies the slow-consumer policy when the
    /// queue is over its cap.
    enqueue_result deliver(protocol::session_id from, std::string_view payload);
    /// Queues a preformatted frame (e.g. a host notice). Thread-safe.
    enqueue_result send_frame(std::string_view frame);
    /// Closes the session (the client first gets the reason's -ERR, if any). Thread-safe,
    /// idempotent.
    void close(close_reason why);
    /// Graceful-drain notice: -ERR draining, then close once the queue is flushed. Thread-safe.
    void drain();
    /// Snapshot for INFO / LIST / connz. Thread-safe.
    [[nodiscard]] protocol::session_info info() const;
    /// Bytes waiting to be written. Thread-safe.
    [[nodiscard]] std::size_t queued_bytes() const noexcept {
        return queued_.load(std::memory_order_relaxed);
    }

private:
    friend class registry;
    void start(lariv::Index index);
    void refuse(protocol::error_code code, std::string_view text);

    void do_read();
    void on_read(std::error_code ec, std::size_t n);
    void handle(const protocol::command& cmd);
    void handle_hello(const protocol::hello_msg& m);
    void handle_send(const protocol::send_msg& m);
    void reply(std::string_view frame);
    void reply_error(protocol::error_code code, std::string_view text);
    void arm_tick();
    void on_tick();
    enqueue_result enqueue(std::string_view a, std::string_view b, std::string_view c, bool own);
    void do_write();
    void on_write(std::error_code ec, std::size_t n);
    void do_close(close_reason why);
    void finish_close();

    registry& reg_;
    asio::strand<asio::any_io_executor> strand_;
    asio::ip::tcp::socket socket_;
    asio::steady_timer tick_;
    std::string remote_;
    protocol::session_id id_{};
    lariv::Index index_{};
    clock::time_point created_;

    // Read side (strand only).
    protocol::command_decoder decoder_;
    // Read buffer: starts small (idle sessions are the common case) and doubles, up to 64 KiB,
    // whenever a read fills it (bulk senders).
    std::vector<char> rbuf_ = std::vector<char>(2048);
    std::string name_;
    bool admin_ = false;
    bool verbose_ = false;
    clock::time_point last_input_;
    clock::time_point frame_started_{};  // when the decoder began holding a partial frame
    unsigned outstanding_pings_ = 0;
    std::chrono::milliseconds heartbeat_{0};
    double tokens_ = 0;  // rate limit bucket
    clock::time_point tokens_at_;
    std::any user_data_;

    // Write side: senders on any thread append to pending_ under out_mu_; the strand writes.
    mutable std::mutex out_mu_;
    std::string pending_;
    std::string writing_;
    bool write_in_flight_ = false;
    bool flush_then_close_ = false;
    clock::time_point write_started_{};
    std::atomic<std::size_t> queued_{0};

    std::atomic<bool> handshaken_{false};
    std::atomic<bool> closing_{false};
    bool closed_ = false;    // strand only
    bool finished_ = false;  // strand only: the socket is closed and open_ was released
    std::atomic<std::uint64_t> msgs_in_{0};
    std::atomic<std::uint64_t> msgs_out_{0};
};

}  // namespace lariv::server
