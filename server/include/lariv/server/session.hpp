// lariv/server/session.hpp — a Lariv-protocol session over any Asio stream.
//
// Two homes: the transport (session.cpp: read loop, bounded write queue, deadlines, closing) and
// the wire-protocol handler (session_commands.cpp: HELLO, SEND, INFO, LIST, KICK, STATS, ...).
// The stream itself is the only part that depends on the stream type: stream_session<Stream>
// below implements three small virtual functions (start a read, start a write, close), each called
// once per I/O operation, never per message. Plain TCP, asio::ssl::stream<tcp::socket> and
// local::stream_protocol::socket all fit.
//
// Everything but the thread-safe members listed as such runs on the session's strand
// (get_executor()).
#pragma once

#include <any>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <asio/bind_executor.hpp>
#include <asio/buffer.hpp>
#include <asio/dispatch.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/strand.hpp>
#include <asio/write.hpp>

#include "lariv/protocol/decoder.hpp"
#include "lariv/protocol/json.hpp"
#include "lariv/server/detail/deadline_queue.hpp"
#include "lariv/server/detail/registry_core.hpp"
#include "lariv/server/host_session.hpp"

namespace lariv::server {

class session : public session_base,
                private detail::timed,
                public std::enable_shared_from_this<session> {
public:
    ~session() override;

    /// Client name from HELLO ("" before). Thread-safe.
    [[nodiscard]] std::string name() const;
    /// Peer address ("ip:port", or the socket path). Thread-safe (immutable).
    [[nodiscard]] std::string remote() const override { return remote_; }
    /// HELLO accepted. Thread-safe.
    [[nodiscard]] bool handshaken() const noexcept { return handshaken_.load(std::memory_order_acquire); }
    /// The host's own data for this session. Strand only (in hooks, or in handlers bound to
    /// get_executor()).
    [[nodiscard]] std::any& user_data() noexcept { return user_data_; }
    /// The session's strand: hooks run here; post here to touch user_data().
    [[nodiscard]] asio::any_io_executor get_executor() const override { return strand_; }
    /// Bytes in and out, idle time, last heartbeat round trip. Thread-safe.
    [[nodiscard]] connection_stats connection() const override;

    /// Queues `MSG <from> <n>` + payload. Thread-safe. Applies the slow-consumer policy when the
    /// queue is over its cap.
    deliver_result deliver(protocol::session_id from, std::string_view payload) override;
    /// Queues `ACK <token> ok|<code>`: the owner node's verdict on a tokened SEND to another
    /// node. Thread-safe; never dropped (a session that cannot take it is a slow consumer).
    void deliver_ack(std::string_view token, std::optional<protocol::error_code> err) override;
    /// Queues a preformatted frame (e.g. a host notice). Thread-safe.
    deliver_result send_frame(std::string_view frame);
    /// Closes the session (the client first gets the reason's -ERR, if any). Thread-safe,
    /// idempotent. close_reason::shutdown closes at once, without a linger.
    void close(close_reason why) override;
    /// Graceful-drain notice: -ERR draining, then close once the queue is flushed. Thread-safe.
    void drain() override;
    /// Snapshot for INFO / LIST / connz. Thread-safe.
    [[nodiscard]] protocol::session_info info() const override;
    /// Bytes waiting to be written. Thread-safe.
    [[nodiscard]] std::size_t queued_bytes() const noexcept override {
        return queued_.load(std::memory_order_relaxed);
    }

protected:
    session(std::shared_ptr<detail::registry_core> core, const asio::any_io_executor& ex,
            std::string remote);

    // The stream, per type (stream_session<Stream>).
    virtual void start_read() = 0;   ///< an async read, completing in on_read
    /// Writes what of writing_ the stream takes now, without blocking; 0 if it cannot tell
    /// (TLS). `ec`: a hard error (would_block is not one).
    virtual std::size_t write_now(std::error_code& ec) = 0;
    /// Async write of writing_ from `offset` on, completing in on_write with offset included.
    virtual void start_write(std::size_t offset) = 0;
    virtual void close_stream() noexcept = 0;

    /// `in`: the bytes read, valid only during the call (the decoder copies a partial frame).
    void on_read(std::error_code ec, std::string_view in);
    void on_write(std::error_code ec, std::size_t n);
    /// This thread's read buffer (read_buffer_size bytes), for streams read on readiness.
    [[nodiscard]] static char* thread_read_buffer();
    static constexpr std::size_t read_buffer_size = 64U << 10;

    asio::strand<asio::any_io_executor> strand_;
    // Streams that cannot report readiness (TLS: the SSL layer holds decrypted bytes the socket
    // does not show) read into a buffer of their own: 2 KiB at the first read, x2 up to 64 KiB on
    // full reads. Sockets read on readiness into the thread's buffer and keep none (idle memory).
    std::vector<char> rbuf_;
    std::string writing_;

private:
    friend class detail::registry_core;
    /// Called by the registry once the session is visible (its id written).
    void start(lariv::Index index);
    /// Never registered: tell the client why, flush, close.
    void refuse(protocol::error_code code, std::string_view text);

    // Wire-protocol handler (session_commands.cpp).
    void handle(const protocol::command& cmd);
    void handle_hello(const protocol::hello_msg& m);
    void handle_send(const protocol::send_msg& m);

    /// Queues a reply to one of the client's commands. Replies leave in the order of the
    /// commands (PROTOCOL.md 2): while an INFO or KICK of another node's session waits for its
    /// answer, later replies are held behind it (held_).
    void reply(std::string_view frame);
    /// INFO / KICK of a session of another node: a reply slot now, filled when the owner answers.
    void remote_request(bool kick, protocol::session_id target);
    /// The answer for reply slot `seq` came: fill it, then send every filled slot at the front.
    void fill_slot(std::uint64_t seq, std::string frame);
    void reply_error(protocol::error_code code, std::string_view text);
    /// (Re)schedules the session's deadline for the earliest one running, or for none. Strand
    /// only.
    void arm_tick();
    /// A closing session's last deadline: finish_close after `d`, however the flush goes.
    /// Strand only.
    void arm_linger(clock::duration d);
    /// The one place a deadline is scheduled: `due` replaces the session's deadline. Strand only.
    void schedule_at(clock::time_point due);
    /// The deadline queue's call (any thread): on_tick, on the strand.
    void deadline_due(std::shared_ptr<detail::timed> self) override;
    /// This session as the deadline queue holds it.
    std::shared_ptr<detail::timed> timed_self() {
        return {shared_from_this(), static_cast<detail::timed*>(this)};
    }
    /// A deadline due at `due` began: re-arm if it comes before the armed expiry. Strand only.
    void deadline_started(clock::time_point due);
    [[nodiscard]] clock::time_point next_deadline();
    void on_tick();
    deliver_result enqueue(std::string_view a, std::string_view b, std::string_view c, bool own);
    void do_write();
    /// The write of writing_ ended (n bytes, or ec): the old on_write. True if more is queued
    /// and do_write should run again.
    [[nodiscard]] bool write_done(std::error_code ec, std::size_t n);
    void begin_drain();
    void leave_registry(close_reason why);
    void do_close(close_reason why);
    void finish_close();
    void post_write();

    std::shared_ptr<detail::registry_core> core_;
    detail::deadline_queue& deadlines_;  // the session's one deadline at a time is there
    std::string remote_;
    std::string ip_key_;  // max_sessions_per_ip place, released once in finish_close (or ~session)
    lariv::Index index_{};
    bool published_ = false;

    // Read side (strand only).
    protocol::command_decoder decoder_;
    std::string name_;  // written once on the strand before the move to live (release)
    bool admin_ = false;
    bool draining_ = false;  // begin_drain ran: keep reading, answer SENDs with draining
    std::size_t drain_notice_left_ = 0;  // bytes to write until -ERR draining is out; 0: stop reading
    bool verbose_ = false;
    bool reading_ = false;          // on_read is handling commands: replies wait for its end
    bool flush_after_read_ = false;  // a reply started the write queue during on_read
    clock::time_point last_input_;
    clock::time_point frame_started_{};  // when the decoder began holding a partial frame
    clock::time_point armed_ = clock::time_point::max();  // the deadline scheduled; max = none
    clock::time_point linger_due_ = clock::time_point::max();  // closing: finish_close then
    unsigned outstanding_pings_ = 0;
    std::chrono::milliseconds heartbeat_{0};
    double tokens_ = 0;  // rate limit bucket
    clock::time_point tokens_at_;
    std::any user_data_;

    // Write side: senders on any thread append to pending_ under out_mu_; the strand writes.
    mutable std::mutex out_mu_;
    std::string pending_;
    bool write_in_flight_ = false;
    bool flush_then_close_ = false;
    clock::time_point write_started_{};
    std::atomic<std::size_t> queued_{0};
    std::atomic<bool> closing_{false};  // no more routed frames (any thread reads)
    std::atomic<bool> handshaken_{false};  // release publishes name_

    bool closed_ = false;    // strand only: do_close ran
    bool finished_ = false;  // strand only: the stream is closed and the open count released
    std::atomic<std::uint64_t> msgs_in_{0};
    std::atomic<std::uint64_t> msgs_out_{0};
    // Transport figures for /connz. Each has one writer, the strand (a relaxed load and store, no
    // read-modify-write); any thread reads them.
    std::atomic<std::uint64_t> bytes_in_{0};
    std::atomic<std::uint64_t> bytes_out_{0};
    std::atomic<clock::rep> last_input_at_{0};  // last_input_, readable off the strand
    std::atomic<std::int64_t> rtt_us_{-1};
    clock::time_point ping_sent_{};  // strand only: the heartbeat PING awaiting its PONG
    std::uint32_t route_sample_ = 0;  // strand only: counts SENDs for the sampled route latency
    // Replies held behind a pending remote INFO/KICK (strand only). held_[0] is reply slot
    // held_base_; a slot is ready once its bytes are final. Bounded: at most
    // max_remote_requests pending, and held bytes count against max_queue_bytes.
    struct reply_slot {
        bool ready = false;
        std::string bytes;
    };
    // A vector, not a deque: libstdc++'s deque allocates ~600 B when default-constructed, which
    // every idle session would pay; an empty vector allocates nothing.
    std::vector<reply_slot> held_;
    std::uint64_t held_base_ = 0;
    std::size_t held_bytes_ = 0;
    std::uint32_t remote_pending_ = 0;
    static constexpr std::uint32_t max_remote_requests = 64;
};

namespace detail {

template <class S>
concept has_lowest_layer = requires(S& s) { s.lowest_layer(); };

/// The socket under a stream (itself for a plain socket).
template <class Stream>
auto& lowest_socket(Stream& s) {
    if constexpr (has_lowest_layer<Stream>) {
        return s.lowest_layer();
    } else {
        return s;
    }
}

/// "ip:port" for TCP, the path (or "unix") for a local socket, "?" when unknown.
template <class Socket>
std::string peer_text(Socket& sock) {
    std::error_code ec;
    const auto ep = sock.remote_endpoint(ec);
    if (ec) {
        return "?";
    }
    if constexpr (std::is_same_v<typename Socket::protocol_type, asio::ip::tcp>) {
        return ep.address().to_string() + ":" + std::to_string(ep.port());
    } else {
        std::string p = ep.path();
        return p.empty() ? std::string("unix") : "unix:" + p;
    }
}

}  // namespace detail

/// A stream whose socket is the stream itself (tcp::socket, local::stream_protocol::socket):
/// readiness on the descriptor means bytes to read, so it can be read on readiness.
template <class S>
concept readable_on_readiness = requires(S& s, std::error_code& ec) {
    s.async_wait(S::wait_read, [](std::error_code) {});
    s.non_blocking(true, ec);
    { s.read_some(asio::mutable_buffer(), ec) } -> std::convertible_to<std::size_t>;
};

/// A Lariv-protocol session over `Stream` (anything with async_read_some / async_write_some and an
/// executor). The stream must be connected (and, for TLS, handshaken) when adopted.
template <class Stream>
class stream_session final : public session {
public:
    stream_session(std::shared_ptr<detail::registry_core> core, Stream stream)
        : session(std::move(core), stream.get_executor(), detail::peer_text(detail::lowest_socket(stream)))
        , stream_(std::move(stream)) {
        if constexpr (std::is_same_v<typename std::decay_t<decltype(detail::lowest_socket(stream_))>::protocol_type,
                                     asio::ip::tcp>) {
            std::error_code ec;
            detail::lowest_socket(stream_).set_option(asio::ip::tcp::no_delay(true), ec);
        }
        if constexpr (readable_on_readiness<Stream>) {
            std::error_code ec;
            stream_.non_blocking(true, ec);  // read_some after a readiness wait never blocks
        }
    }

private:
    void start_read() override {
        if constexpr (readable_on_readiness<Stream>) {
            // Read on readiness into the thread's buffer: an idle session holds no read buffer.
            // After a read that filled the buffer, more is probably waiting: read again at once
            // (posted, so a peer that keeps sending never recurses the stack, and through the
            // io_context's queue before the strand, as a completion is, so it takes its turn
            // behind the write completions already queued: posting to the strand directly put
            // each next read ahead of them, replies piled up and a small max_queue_bytes closed
            // a pipelining client as a slow consumer). After a short read the socket was
            // drained: wait for readability (async_wait re-arms the descriptor with epoll_ctl,
            // which under EPOLLET reports bytes that arrived in between, so no wake-up is lost).
            if (std::exchange(more_, false)) {
                asio::post(stream_.get_executor(),
                           asio::bind_executor(strand_, [this, self = shared_from_this()] { read_ready(); }));
            } else {
                wait_readable();
            }
        } else {
            // Grown before the next read starts (never under one in flight): the last read's
            // bytes are consumed by now.
            if (rbuf_.empty()) {
                rbuf_.resize(2048);
            } else if (std::exchange(more_, false) && rbuf_.size() < read_buffer_size) {
                rbuf_.resize(rbuf_.size() * 2);
            }
            stream_.async_read_some(
                asio::buffer(rbuf_),
                asio::bind_executor(strand_, [this, self = shared_from_this()](std::error_code ec, std::size_t n) {
                    more_ = n == rbuf_.size();
                    on_read(ec, {rbuf_.data(), n});
                }));
        }
    }
    void wait_readable() {
        // The one operation an idle session keeps pending, so it is kept small: the handler is
        // not bound to the strand (an executor_binder would carry a copy of the strand, and the
        // operation a second one for its work guard: 289 B where this is 145 B). It enters the
        // strand itself, which costs what a bound completion costs: dispatch runs it at once
        // when the strand is free, as the bound handler's completion would.
        stream_.async_wait(Stream::wait_read, [this, self = shared_from_this()](std::error_code e) mutable {
            asio::dispatch(strand_, [this, self = std::move(self), e] {
                if (e) {
                    on_read(e, {});
                } else {
                    read_ready();
                }
            });
        });
    }
    /// Readiness path: one non-blocking read into the thread's buffer (a spurious wake-up
    /// waits again).
    void read_ready() {
        // A session closed meanwhile: read_some fails on the closed socket, on_read ignores it.
        char* buf = thread_read_buffer();
        std::error_code ec;
        // The read size grows as rbuf_ does (2 KiB, x2 on full reads, up to 64 KiB): a session
        // answers each read's commands before the next read, so a small first read keeps the
        // replies to a burst within a small max_queue_bytes.
        const std::size_t n = stream_.read_some(asio::buffer(buf, read_size_), ec);
        if (ec == asio::error::would_block || ec == asio::error::try_again) {
            wait_readable();
            return;
        }
        more_ = !ec && n == read_size_;
        if (more_ && read_size_ < read_buffer_size) {
            read_size_ *= 2;
        }
        on_read(ec, {buf, n});
    }
    std::size_t write_now(std::error_code& ec) override {
        if constexpr (readable_on_readiness<Stream>) {
            // Non-blocking (set in the constructor): a write the socket buffer takes completes
            // here, without a completion handler through the scheduler (and, on a shared
            // io_context, without waking another thread for it).
            const std::size_t n = stream_.write_some(asio::buffer(writing_), ec);
            if (ec == asio::error::would_block || ec == asio::error::try_again) {
                ec = {};
            }
            return ec ? 0 : n;
        } else {
            (void)ec;
            return 0;
        }
    }
    void start_write(std::size_t offset) override {
        asio::async_write(stream_, asio::buffer(writing_.data() + offset, writing_.size() - offset),
                          asio::bind_executor(strand_, [this, offset, self = shared_from_this()](
                                                               std::error_code ec, std::size_t n) {
                              on_write(ec, offset + n);
                          }));
    }
    void close_stream() noexcept override {
        auto& sock = detail::lowest_socket(stream_);
        std::error_code ec;
        if (sock.is_open()) {
            sock.shutdown(std::decay_t<decltype(sock)>::shutdown_both, ec);
            sock.close(ec);
        }
    }

    Stream stream_;
    bool more_ = false;  // strand only: the last read filled its buffer (more is likely waiting)
    std::uint32_t read_size_ = 2048;  // strand only: the readiness path's next read size
};

}  // namespace lariv::server
