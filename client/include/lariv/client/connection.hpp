// lariv/client/connection.hpp — a Lariv-protocol client connection (PROTOCOL.md) as an Asio
// I/O object: runs on the caller's executor, owns no threads, every operation takes any
// completion token (callbacks, asio::use_future, asio::use_awaitable where the compiler has
// coroutines, asio::experimental::deferred).
//
//     lariv::client::connection c(io.get_executor());
//     c.async_connect("127.0.0.1:7411", {.name = "node-7"}, [&](std::error_code ec) {
//         c.async_send_acked(peer, "hello", [](std::error_code verdict) { ... });
//     });
//
// Pipelining: any number of sends and commands may be in flight. Replies are matched to commands
// in command order, ACKs by token (every SEND carries a token this connection generates, so
// async_send's failures never arrive as an -ERR that could be taken for a command's reply).
// Server PINGs are answered with PONG by the connection itself. One read loop and one write
// queue: frames queued while a write is in flight go out together in the next write.
//
// Thread-safety: the async_* initiating functions, close(), on_reconnect(), is_open(),
// reconnecting(), draining(), send_failures(), id(), server_hello(), limits() and heartbeat()
// may be called from any thread: they post to the connection's internal strand, where all of its
// state lives, or read a snapshot of it (id() and the +HELLO are copies under a lock, since a
// reconnect replaces them). Construction, move and destruction must not overlap other calls (as
// for any Asio I/O object).
//
// Completion: each operation completes exactly once, on its handler's associated executor
// (default: the connection's executor), never inline in the initiating call. A pending operation
// keeps that executor busy (outstanding work).
//
// Lifetime: the destructor closes the connection (as close()); pending operations complete with
// asio::error::operation_aborted. Internal state is shared with the handlers in flight, so a
// handler that runs after the connection object is gone is harmless. The execution context must
// outlive the connection object.
//
// Ending: when the server closes the connection or it breaks, every pending operation completes
// with that error (asio::error::eof, connection_reset, ...); when the server ends it with a
// closing -ERR (PROTOCOL.md section 7: timeout, slow_consumer, server_full, not_authorized when
// kicked, ...) with that code. Messages received before the end can still be taken with
// async_receive; after them it completes with the same error. A connection connects once
// (errc::already_connected after); unless its reconnect policy is on (below), make a new one to
// reconnect: the new session has a new id.
//
// Reconnecting (connection_options::reconnect, off by default): once async_connect has
// succeeded, a drop (the server closed or reset the connection, was killed, closed it after a
// drain, a heartbeat timeout, ...) starts a reconnect: attempt 1 after backoff_delay(policy, 1),
// then attempt k+1 backoff_delay(policy, k+1) after attempt k failed, each one resolving,
// connecting (TLS handshake included) and sending HELLO with the same hello_options. Not after
// close(), async_close() or the destructor, not after a kick (-ERR not_authorized), and not for
// the first async_connect, which reports its failure as before. Session ids never survive: the
// new session has a new id. What happens around it:
//   - At the drop: every pending async_send_acked, async_send and command (async_info,
//     async_ping, ...) completes with the drop's error (asio::error::eof, connection_reset, the
//     closing protocol code, ...), exactly as without the policy. An acked SEND whose ACK had
//     not come may or may not have been routed by the server: it is never resent; resend it
//     yourself if your messages tolerate duplicates. Messages already received stay queued.
//   - A pending async_receive keeps waiting across the reconnect and gets the new session's
//     messages; one started while reconnecting waits as well.
//   - Any other operation started while reconnecting fails fast with errc::reconnecting (it was
//     not started; try again after the reconnected event). is_open() is false and
//     reconnecting() true meanwhile; id() is the null session_id: the old id is gone.
//   - The on_reconnect() handler gets reconnect_event: lost (with the old id and the first
//     delay), attempt_failed (its error and the next delay), reconnected (old and new id),
//     gave_up. It runs on a strand of the connection's executor (one event at a time, in order,
//     never inline); an exception from it propagates out of the executor's run(), as from any
//     handler.
//   - Giving up (max_attempts attempts failed, or a HELLO refused for good: not_authorized,
//     unsupported_version, bad_json): the connection closes with the last attempt's error: a pending
//     async_receive completes with it, later operations fail with errc::not_connected.
//   - async_close(), close() or the destructor during a backoff wait or an attempt stops the
//     reconnect at once: the wait is cancelled, pending receives complete with
//     asio::error::operation_aborted, async_close() completes with success.
//
// TLS (connection_options::tls): the same protocol over asio::ssl::stream<tcp::socket>, with a
// context of the caller's or one made from PEM files (CA, client certificate and key for mTLS);
// the server is verified against the CA and the host name (SNI sent for names). A failed
// handshake completes async_connect with OpenSSL's error ("certificate verify failed", ...,
// category asio.ssl); a file that cannot be loaded likewise. Everything else is the same: the
// transport is the only part that differs.
//
// Cancellation (asio::bind_cancellation_slot, parallel_group, ...):
//   - async_receive: any cancellation type; the message, if one arrives later, stays queued.
//   - async_connect: terminal or partial; the connection is closed.
//   - async_send_acked, async_info, async_list, async_kick, async_stats, async_ping: terminal
//     or partial only (the frame is already on its way and may take effect; the reply is
//     dropped when it arrives). Total cancellation is not supported.
//   - async_send and async_close are not cancellable (use close()).
//
// Bounded memory: received messages wait in a queue of at most
// connection_options::max_receive_queue messages / max_receive_bytes payload bytes; at the cap
// the connection stops reading (TCP pushes back on the server) until async_receive takes one.
// Outgoing frames are copied when an operation starts and held until written; each pending
// operation holds its frame, so memory grows with the operations the caller has started and not
// seen complete: async_send completes when its frame has been written to the socket, so a
// caller that waits for it (or keeps a window) bounds the queue. A payload over the server's
// max_payload fails with errc::payload_too_large and sends nothing.
#pragma once

#include <charconv>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/execution/outstanding_work.hpp>
#include <asio/post.hpp>
#include <asio/prefer.hpp>
#include <nlohmann/json.hpp>

#include "lariv/client/detail/connection_impl.hpp"
#include "lariv/client/error.hpp"
#include "lariv/protocol/encoder.hpp"
#include "lariv/protocol/json.hpp"
#include "lariv/protocol/message.hpp"
#include "lariv/protocol/session_id.hpp"

namespace lariv::client {

namespace detail {

/// A pending operation: the user's handler, a tracked-work guard on its executor, and the
/// conversion of the raw result to the handler's arguments.
template <class Handler, class Convert>
class op final : public op_base {
public:
    op(Handler h, const asio::any_io_executor& fallback, Convert c)
        : work_(asio::prefer(asio::get_associated_executor(h, fallback),
                             asio::execution::outstanding_work.tracked))
        , handler_(std::move(h))
        , convert_(std::move(c)) {}

    void complete(std::error_code ec, reply_data&& d) override {
        auto args = convert_(ec, std::move(d));
        auto ex = work_;
        asio::post(ex, [h = std::move(handler_), w = std::move(work_), args = std::move(args)]() mutable {
            (void)w;
            std::apply(std::move(h), std::move(args));
        });
    }

private:
    // decay: asio::prefer returns T&& when the executor ignores the property (use_future's).
    using work_t = std::decay_t<decltype(asio::prefer(
        asio::get_associated_executor(std::declval<Handler&>(), std::declval<const asio::any_io_executor&>()),
        asio::execution::outstanding_work.tracked))>;
    work_t work_;
    Handler handler_;
    Convert convert_;
};

template <class Handler, class Convert>
op_ptr make_op(Handler&& h, const asio::any_io_executor& fallback, Convert c) {
    return std::make_unique<op<std::decay_t<Handler>, Convert>>(std::forward<Handler>(h), fallback,
                                                                 std::move(c));
}

/// Connects the handler's cancellation slot, if any, to a cancel of operation `ticket`.
template <class Handler>
void bind_cancellation(Handler& h, const std::shared_ptr<connection_impl>& impl, std::uint64_t ticket,
                       asio::cancellation_type allowed) {
    auto slot = asio::get_associated_cancellation_slot(h);
    if (slot.is_connected()) {
        // Holds only a weak_ptr and a ticket: an emit after completion finds nothing to cancel.
        slot.assign([w = std::weak_ptr<connection_impl>(impl), ticket, allowed](asio::cancellation_type t) {
            if ((t & allowed) != asio::cancellation_type::none) {
                if (auto i = w.lock()) {
                    i->post_cancel(ticket);
                }
            }
        });
    }
}

inline constexpr auto cancel_reply = asio::cancellation_type::terminal | asio::cancellation_type::partial;
inline constexpr auto cancel_any =
    asio::cancellation_type::terminal | asio::cancellation_type::partial | asio::cancellation_type::total;

struct to_error {
    std::tuple<std::error_code> operator()(std::error_code ec, reply_data&&) const { return {ec}; }
};
struct to_message {
    std::tuple<std::error_code, message> operator()(std::error_code ec, reply_data&& d) const {
        return {ec, message{d.from, std::move(d.text)}};
    }
};
struct to_rtt {
    std::tuple<std::error_code, std::chrono::nanoseconds> operator()(std::error_code ec, reply_data&& d) const {
        return {ec, ec ? std::chrono::nanoseconds(0) : d.rtt};
    }
};
template <class T>
struct to_body {
    std::tuple<std::error_code, T> operator()(std::error_code ec, reply_data&& d) const {
        if (ec) {
            return {ec, T{}};
        }
        auto v = protocol::parse_body<T>(d.text, *d.limits);
        if (!v) {
            return {make_error_code(errc::bad_reply), T{}};
        }
        return {ec, std::move(*v)};
    }
};
struct to_json {
    std::tuple<std::error_code, nlohmann::json> operator()(std::error_code ec, reply_data&& d) const {
        if (ec) {
            return {ec, nlohmann::json()};
        }
        auto v = protocol::parse_json(d.text, *d.limits);
        if (!v || !v->is_object()) {
            return {make_error_code(errc::bad_reply), nlohmann::json()};
        }
        return {ec, std::move(*v)};
    }
};

}  // namespace detail

/// Splits "host:port" (or "[v6]:port"); false when either part is missing.
[[nodiscard]] bool split_host_port(std::string_view server, std::string& host, std::string& port);

/// A client connection to a Lariv registry (larivd or an embedded lariv::server::registry).
class connection {
public:
    using executor_type = asio::any_io_executor;

    /// A connection that will run its I/O on `ex`. Nothing happens until async_connect.
    explicit connection(executor_type ex, const connection_options& opts = {})
        : impl_(std::make_shared<detail::connection_impl>(std::move(ex), opts)) {}
    /// Closes the connection (see close()).
    ~connection() {
        if (impl_) {
            impl_->post_abort();
        }
    }
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    connection(connection&&) noexcept = default;
    connection& operator=(connection&& o) noexcept {
        if (this != &o) {
            if (impl_) {
                impl_->post_abort();
            }
            impl_ = std::move(o.impl_);
        }
        return *this;
    }

    [[nodiscard]] executor_type get_executor() const noexcept { return impl_->executor(); }

    /// Resolves `host`, connects, sends HELLO and waits for +HELLO. Signature void(error_code):
    /// resolver/socket errors, or the server's refusal (not_authorized, bad_json, server_full,
    /// draining, ...), or errc::already_connected.
    template <class Token>
    auto async_connect(std::string host, std::string port, hello_options hello, Token&& token) {
        const std::uint64_t ticket = impl_->next_ticket();
        return asio::async_initiate<Token, void(std::error_code)>(
            [impl = impl_, ticket](auto handler, std::string h, std::string p, hello_options o) {
                detail::bind_cancellation(handler, impl, ticket, detail::cancel_reply);
                impl->post_connect(std::move(h), std::move(p), std::move(o), ticket,
                                   detail::make_op(std::move(handler), impl->executor(), detail::to_error{}));
            },
            token, std::move(host), std::move(port), std::move(hello));
    }
    /// async_connect to "host:port" ("[::1]:7411" for IPv6); errc::bad_address when it has no port.
    template <class Token>
    auto async_connect(std::string_view server, hello_options hello, Token&& token) {
        const std::uint64_t ticket = impl_->next_ticket();
        return asio::async_initiate<Token, void(std::error_code)>(
            [impl = impl_, ticket](auto handler, std::string s, hello_options o) {
                std::string h;
                std::string p;
                const bool ok = split_host_port(s, h, p);
                detail::bind_cancellation(handler, impl, ticket, detail::cancel_reply);
                auto op = detail::make_op(std::move(handler), impl->executor(), detail::to_error{});
                if (!ok) {
                    op->complete(make_error_code(errc::bad_address), {});
                    return;
                }
                impl->post_connect(std::move(h), std::move(p), std::move(o), ticket, std::move(op));
            },
            token, std::string(server), std::move(hello));
    }

    /// Fire and forget: relays `payload` (copied now) to session `to`. Completes, with
    /// void(error_code), once the frame has been written to the socket; the server's verdict is
    /// not reported (a failure counts in send_failures()). errc::not_connected, payload_too_large.
    template <class Token>
    auto async_send(protocol::session_id to, std::string_view payload, Token&& token) {
        return initiate_send(to, payload, false, std::forward<Token>(token));
    }
    /// Relays `payload` (copied now) to `to` and completes, with void(error_code), on the
    /// server's ACK: success once it is queued for the target, or the verdict as a
    /// protocol::error_code: unknown_session, stale_session, queue_full, rate_limited, draining.
    /// At a connection end before the ACK: that error (the payload is then not delivered).
    template <class Token>
    auto async_send_acked(protocol::session_id to, std::string_view payload, Token&& token) {
        return initiate_send(to, payload, true, std::forward<Token>(token));
    }

    /// The next message relayed to this session. Signature void(error_code, message).
    template <class Token>
    auto async_receive(Token&& token) {
        const std::uint64_t ticket = impl_->next_ticket();
        return asio::async_initiate<Token, void(std::error_code, message)>(
            [impl = impl_, ticket](auto handler) {
                detail::bind_cancellation(handler, impl, ticket, detail::cancel_any);
                impl->post_receive(ticket, detail::make_op(std::move(handler), impl->executor(),
                                                           detail::to_message{}));
            },
            token);
    }

    /// INFO: void(error_code, protocol::session_info); unknown_session / stale_session.
    template <class Token>
    auto async_info(protocol::session_id id, Token&& token) {
        return initiate_command<void(std::error_code, protocol::session_info)>(
            detail::command_kind::info, protocol::info_msg{id},
            detail::to_body<protocol::session_info>{}, std::forward<Token>(token));
    }
    /// LIST, one page (admin): void(error_code, protocol::list_page). Pass the page's `next` as
    /// `after` for the next one; limit 0 = the server's default. not_authorized without the
    /// admin token.
    template <class Token>
    auto async_list(std::optional<protocol::session_id> after, std::uint32_t limit, Token&& token) {
        return initiate_command<void(std::error_code, protocol::list_page)>(
            detail::command_kind::list, protocol::list_msg{after, limit},
            detail::to_body<protocol::list_page>{}, std::forward<Token>(token));
    }
    /// KICK (admin): void(error_code); not_authorized, unknown_session, stale_session.
    template <class Token>
    auto async_kick(protocol::session_id id, Token&& token) {
        return initiate_command<void(std::error_code)>(detail::command_kind::kick, protocol::kick_msg{id},
                                                       detail::to_error{}, std::forward<Token>(token));
    }
    /// STATS: void(error_code, nlohmann::json) with the server's counters.
    template <class Token>
    auto async_stats(Token&& token) {
        return initiate_command<void(std::error_code, nlohmann::json)>(
            detail::command_kind::stats, protocol::stats_msg{}, detail::to_json{}, std::forward<Token>(token));
    }
    /// PING and its PONG: void(error_code, std::chrono::nanoseconds round_trip). The time runs
    /// from when the PING was queued, so it includes waiting behind frames queued before it.
    template <class Token>
    auto async_ping(Token&& token) {
        return initiate_command<void(std::error_code, std::chrono::nanoseconds)>(
            detail::command_kind::ping, protocol::ping_msg{}, detail::to_rtt{}, std::forward<Token>(token));
    }
    /// QUIT: completes, with void(error_code), when the server confirmed (+OK bye) or closed.
    /// Frames queued before it are sent first, so their replies and ACKs arrive before it
    /// completes. New operations fail with errc::not_connected from here on.
    template <class Token>
    auto async_close(Token&& token) {
        return asio::async_initiate<Token, void(std::error_code)>(
            [impl = impl_](auto handler) {
                impl->post_close(detail::make_op(std::move(handler), impl->executor(), detail::to_error{}));
            },
            token);
    }

    /// Closes the socket now, without QUIT: every pending operation completes with
    /// asio::error::operation_aborted; a reconnect in progress stops. Any thread; idempotent.
    void close() { impl_->post_abort(); }

    /// The handler of reconnect events (connection_options::reconnect): runs on a strand of the
    /// connection's executor, one event at a time, in order. Any thread; it applies to the events
    /// after it (set it before async_connect to see them all). An empty function removes it.
    void on_reconnect(std::function<void(const reconnect_event&)> handler) {
        impl_->post_reconnect_handler(std::move(handler));
    }

    /// True between a successful async_connect and the end of the connection, except while
    /// reconnecting (a snapshot).
    [[nodiscard]] bool is_open() const noexcept { return impl_->is_open(); }
    /// True from a drop until the reconnect succeeded or gave up (a snapshot).
    [[nodiscard]] bool reconnecting() const noexcept { return impl_->reconnecting(); }
    /// True once the server announced a drain (-ERR draining); it closes the connection soon.
    [[nodiscard]] bool draining() const noexcept { return impl_->draining(); }
    /// async_send payloads the server refused (their ACK carried an error), so far.
    [[nodiscard]] std::uint64_t send_failures() const noexcept { return impl_->send_failures(); }

    /// This session's id, from +HELLO (after async_connect succeeded); a reconnect replaces it,
    /// and it is the null session_id from a drop until the reconnect succeeded (so for good after
    /// giving up). After any other end it stays the last one.
    [[nodiscard]] protocol::session_id id() const { return impl_->id(); }
    /// The current session's +HELLO (a copy): node, server version, limits, heartbeat.
    [[nodiscard]] protocol::hello_reply server_hello() const { return impl_->hello(); }
    /// The limits the server announced for this session.
    [[nodiscard]] protocol::limits limits() const { return impl_->hello().limits; }
    /// The server's PING interval (0: none).
    [[nodiscard]] std::chrono::milliseconds heartbeat() const {
        return std::chrono::milliseconds(impl_->hello().heartbeat_ms);
    }

private:
    template <class Token>
    auto initiate_send(protocol::session_id to, std::string_view payload, bool acked, Token&& token) {
        const std::uint64_t ticket = impl_->next_ticket();
        // The frame (and so the payload) is copied now: the caller's buffer may go at once.
        char tok[24];
        const auto end = std::to_chars(tok, tok + sizeof tok, ticket).ptr;
        std::string frame;
        frame.reserve(protocol::max_header_size + payload.size() + 2);
        protocol::encode_send_header(frame, to, payload.size(), std::string_view(tok, end - tok));
        frame.append(payload).append("\r\n");
        return asio::async_initiate<Token, void(std::error_code)>(
            [impl = impl_, ticket, acked, n = payload.size()](auto handler, std::string f) {
                if (acked) {
                    detail::bind_cancellation(handler, impl, ticket, detail::cancel_reply);
                }
                impl->post_send(std::move(f), n, ticket, acked,
                                detail::make_op(std::move(handler), impl->executor(), detail::to_error{}));
            },
            token, std::move(frame));
    }

    template <class Signature, class Command, class Convert, class Token>
    auto initiate_command(detail::command_kind kind, const Command& cmd, Convert conv, Token&& token) {
        const std::uint64_t ticket = impl_->next_ticket();
        std::string frame;
        protocol::encode(frame, cmd);
        return asio::async_initiate<Token, Signature>(
            [impl = impl_, ticket, kind, conv](auto handler, std::string f) {
                detail::bind_cancellation(handler, impl, ticket, detail::cancel_reply);
                impl->post_command(kind, std::move(f), ticket,
                                   detail::make_op(std::move(handler), impl->executor(), conv));
            },
            token, std::move(frame));
    }

    std::shared_ptr<detail::connection_impl> impl_;
};

}  // namespace lariv::client
