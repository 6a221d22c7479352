// The connection's state machine: one read loop, one double-buffered write queue, replies
// matched to commands in order and ACKs by token, all on one strand (detail/connection_impl.hpp).
#include "lariv/client/detail/connection_impl.hpp"

#include <openssl/ssl.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include <asio/bind_executor.hpp>
#include <asio/connect.hpp>
#include <asio/error.hpp>
#include <asio/ip/address.hpp>
#include <asio/post.hpp>
#include <asio/ssl/context.hpp>
#include <asio/ssl/error.hpp>
#include <asio/ssl/host_name_verification.hpp>
#include <asio/ssl/stream.hpp>
#include <asio/write.hpp>

#include "lariv/client/connection.hpp"
#include "lariv/protocol/encoder.hpp"
#include "lariv/protocol/message.hpp"

namespace lariv::client::detail {

using protocol::error_code;

/// One transport connection: a TCP socket, or a TLS stream over one; the read buffer and the
/// write in flight. The handlers of its I/O hold a share of it, so a link replaced by a
/// reconnect lives (with the buffers its operations use) until they have run; they find
/// `link_ != l` and do nothing. Everything else about the connection is the same over both.
struct connection_impl::link {
    using tls_stream = asio::ssl::stream<asio::ip::tcp::socket>;

    link(const asio::strand<asio::any_io_executor>& s, asio::ssl::context* ctx) {
        if (ctx != nullptr) {
            tls.emplace(s, *ctx);
        } else {
            plain.emplace(s);
        }
    }
    asio::ip::tcp::socket& socket() { return tls ? tls->next_layer() : *plain; }

    template <class Handler>
    void read_some(Handler&& h) {
        if (tls) {
            tls->async_read_some(asio::buffer(rbuf), std::forward<Handler>(h));
        } else {
            plain->async_read_some(asio::buffer(rbuf), std::forward<Handler>(h));
        }
    }
    template <class Handler>
    void write(Handler&& h) {
        if (tls) {
            asio::async_write(*tls, asio::buffer(writing), std::forward<Handler>(h));
        } else {
            asio::async_write(*plain, asio::buffer(writing), std::forward<Handler>(h));
        }
    }

    std::optional<asio::ip::tcp::socket> plain;
    std::optional<tls_stream> tls;
    std::array<char, 64 * 1024> rbuf{};
    std::string writing;  // the frames of the write in flight
};

namespace {

/// A client context from `o`: TLS 1.2 minimum, no compression; the server verified unless
/// verify_peer is off.
std::error_code make_tls_context(const tls_options& o, std::shared_ptr<asio::ssl::context>& out) {
    auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
    std::error_code ec;
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_compression |
                         asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                         asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1,
                     ec);
    if (!ec && o.verify_peer) {
        ctx->set_verify_mode(asio::ssl::verify_peer, ec);
        if (!ec) {
            if (o.ca_file.empty()) {
                ctx->set_default_verify_paths(ec);
            } else {
                ctx->load_verify_file(o.ca_file, ec);
            }
        }
    } else if (!ec) {
        ctx->set_verify_mode(asio::ssl::verify_none, ec);
    }
    if (!ec && !o.cert_file.empty()) {
        ctx->use_certificate_chain_file(o.cert_file, ec);
        if (!ec) {
            ctx->use_private_key_file(o.key_file.empty() ? o.cert_file : o.key_file,
                                      asio::ssl::context::pem, ec);
        }
    }
    if (!ec) {
        out = std::move(ctx);
    }
    return ec;
}

/// A HELLO refusal that another attempt cannot change: the reconnect gives up at once.
bool final_refusal(std::error_code ec) noexcept {
    const auto c = protocol_code(ec);
    return c && (*c == error_code::not_authorized || *c == error_code::unsupported_version ||
                 *c == error_code::bad_json || *c == error_code::bad_syntax);
}

}  // namespace

connection_impl::connection_impl(asio::any_io_executor ex, const connection_options& opts)
    : ex_(std::move(ex))
    , strand_(asio::make_strand(ex_))
    , opts_(opts)
    , resolver_(strand_)
    , decoder_(limits_)
    , backoff_(strand_)
    , rng_(std::random_device{}())
    , events_(asio::make_strand(ex_)) {}

connection_impl::~connection_impl() = default;

// ---- posting: the only members other threads call ---------------------------------------------

void connection_impl::post_connect(std::string host, std::string port, hello_options h,
                                   std::uint64_t ticket, op_ptr op) {
    asio::post(strand_, [self = shared_from_this(), host = std::move(host), port = std::move(port),
                         h = std::move(h), ticket, op = std::move(op)]() mutable {
        self->do_connect(std::move(host), std::move(port), std::move(h), ticket, std::move(op));
    });
}

void connection_impl::post_send(std::string frame, std::size_t payload_size, std::uint64_t ticket,
                                bool acked, op_ptr op) {
    asio::post(strand_, [self = shared_from_this(), frame = std::move(frame), payload_size, ticket,
                         acked, op = std::move(op)]() mutable {
        self->do_send(std::move(frame), payload_size, ticket, acked, std::move(op));
    });
}

void connection_impl::post_command(command_kind k, std::string frame, std::uint64_t ticket, op_ptr op) {
    asio::post(strand_, [self = shared_from_this(), k, frame = std::move(frame), ticket,
                         op = std::move(op)]() mutable {
        self->do_command(k, std::move(frame), ticket, std::move(op));
    });
}

void connection_impl::post_receive(std::uint64_t ticket, op_ptr op) {
    asio::post(strand_, [self = shared_from_this(), ticket, op = std::move(op)]() mutable {
        self->do_receive(ticket, std::move(op));
    });
}

void connection_impl::post_close(op_ptr op) {
    asio::post(strand_, [self = shared_from_this(), op = std::move(op)]() mutable {
        self->do_close(std::move(op));
    });
}

void connection_impl::post_abort() {
    asio::post(strand_, [self = shared_from_this()] {
        self->closing_ = true;
        self->fail(asio::error::operation_aborted);
    });
}

void connection_impl::post_cancel(std::uint64_t ticket) {
    asio::post(strand_, [self = shared_from_this(), ticket] { self->do_cancel(ticket); });
}

void connection_impl::post_reconnect_handler(std::function<void(const reconnect_event&)> h) {
    asio::post(strand_, [self = shared_from_this(), h = std::move(h)]() mutable {
        self->on_reconnect_ = h ? std::make_shared<std::function<void(const reconnect_event&)>>(std::move(h))
                                : nullptr;
    });
}

// ---- connecting --------------------------------------------------------------------------------

void connection_impl::do_connect(std::string host, std::string port, hello_options h,
                                 std::uint64_t ticket, op_ptr op) {
    if (state_ != state::idle) {
        finish(op, errc::already_connected);
        return;
    }
    set_state(state::connecting);
    connect_op_ = std::move(op);
    connect_ticket_ = ticket;
    host_ = std::move(host);
    port_ = std::move(port);
    hello_opts_ = std::move(h);
    if (opts_.tls) {
        std::error_code ec;
        if (opts_.tls->context) {
            tls_ctx_ = opts_.tls->context;
        } else {
            ec = make_tls_context(*opts_.tls, tls_ctx_);
        }
        if (ec) {
            fail(ec);  // a CA, certificate or key file that OpenSSL cannot load
            return;
        }
    }
    start_attempt();
}

void connection_impl::start_attempt() {
    set_state(state::connecting);
    link_ = std::make_shared<link>(strand_, tls_ctx_.get());
    reading_ = false;
    writing_now_ = false;
    rpos_ = rlen_ = 0;
    limits_ = protocol::limits{};
    decoder_ = protocol::reply_decoder(limits_);
    resolver_.async_resolve(
        host_, port_,
        asio::bind_executor(strand_, [self = shared_from_this(), l = link_](
                                         std::error_code ec, asio::ip::tcp::resolver::results_type eps) {
            if (self->link_ != l || self->state_ != state::connecting) {
                return;  // aborted meanwhile: fail() completed the operation
            }
            if (ec) {
                self->fail(ec);
                return;
            }
            asio::async_connect(l->socket(), eps,
                                asio::bind_executor(self->strand_, [self, l](std::error_code e, const auto&) {
                                    self->on_connected(l, e);
                                }));
        }));
}

void connection_impl::on_connected(const std::shared_ptr<link>& l, std::error_code ec) {
    if (link_ != l || state_ != state::connecting) {
        return;
    }
    if (ec) {
        fail(ec);
        return;
    }
    if (opts_.no_delay) {
        std::error_code ignored;
        l->socket().set_option(asio::ip::tcp::no_delay(true), ignored);
    }
    if (!l->tls) {
        begin_hello();
        return;
    }
    // SNI (for a host name, not an address) and, when the context verifies the server, the name
    // its certificate must carry.
    const std::string& name = opts_.tls->server_name.empty() ? host_ : opts_.tls->server_name;
    std::error_code not_ip;
    (void)asio::ip::make_address(name, not_ip);
    if (not_ip) {
        SSL_set_tlsext_host_name(l->tls->native_handle(), name.c_str());
    }
    if ((SSL_CTX_get_verify_mode(tls_ctx_->native_handle()) & SSL_VERIFY_PEER) != 0) {
        l->tls->set_verify_callback(asio::ssl::host_name_verification(name), ec);
        if (ec) {
            fail(ec);
            return;
        }
    }
    l->tls->async_handshake(asio::ssl::stream_base::client,
                            asio::bind_executor(strand_, [self = shared_from_this(), l](std::error_code e) {
                                if (self->link_ != l || self->state_ != state::connecting) {
                                    return;
                                }
                                if (e) {
                                    self->fail(e);  // e.g. "certificate verify failed"
                                    return;
                                }
                                self->begin_hello();
                            }));
}

void connection_impl::begin_hello() {
    set_state(state::handshaking);
    // The HELLO is the first command: its +HELLO (or -ERR) completes the connect operation (a
    // reconnect's has no operation: its outcome is an event).
    commands_.push_back({command_kind::hello, connect_op_ ? connect_ticket_ : 0, std::move(connect_op_),
                         std::chrono::steady_clock::now()});
    std::string f;
    protocol::encode(f, protocol::hello_msg{protocol::protocol_version, hello_opts_.name, hello_opts_.auth,
                                            hello_opts_.verbose});
    queue_frame(f);
    start_read();
}

// ---- operations --------------------------------------------------------------------------------

void connection_impl::do_send(std::string frame, std::size_t payload_size, std::uint64_t ticket,
                              bool acked, op_ptr op) {
    if (state_ != state::open) {
        finish(op, in_reconnect_ ? errc::reconnecting : errc::not_connected);
        return;
    }
    if (payload_size > limits_.max_payload) {
        finish(op, errc::payload_too_large);  // the server would close the connection on it
        return;
    }
    // Every SEND carries a token, so every verdict is an ACK and the -ERR replies stay strictly
    // in command order. async_send's entry has no op: it completed at the write.
    if (acked) {
        acks_.emplace(ticket, pending_ack{std::move(op), false});
        queue_frame(frame);
    } else {
        acks_.emplace(ticket, pending_ack{nullptr, true});
        queue_frame(frame, std::move(op));
    }
}

void connection_impl::do_command(command_kind k, std::string frame, std::uint64_t ticket, op_ptr op) {
    if (state_ != state::open) {
        finish(op, in_reconnect_ ? errc::reconnecting : errc::not_connected);
        return;
    }
    commands_.push_back({k, ticket, std::move(op), std::chrono::steady_clock::now()});
    queue_frame(frame);
}

void connection_impl::do_receive(std::uint64_t ticket, op_ptr op) {
    if (!received_.empty()) {
        message m = std::move(received_.front());
        received_.pop_front();
        received_bytes_ -= m.payload.size();
        reply_data d;
        d.from = m.from;
        d.text = std::move(m.payload);
        finish(op, {}, std::move(d));
        // Below the cap again: go on decoding where the read loop stopped.
        if (state_ != state::closed && !receive_full() && !reading_) {
            pump();
        }
        return;
    }
    if (state_ == state::closed) {
        finish(op, end_ ? end_ : make_error_code(errc::not_connected));
        return;
    }
    if (state_ == state::idle) {
        finish(op, errc::not_connected);
        return;
    }
    receivers_.push_back({ticket, std::move(op)});
}

void connection_impl::do_close(op_ptr op) {
    closing_ = true;  // whatever happens now, no reconnect
    switch (state_) {
        case state::open: {
            set_state(state::quitting);
            commands_.push_back({command_kind::quit, 0, std::move(op), std::chrono::steady_clock::now()});
            std::string f;
            protocol::encode(f, protocol::quit_msg{});
            queue_frame(f);
            return;
        }
        case state::quitting:  // a second close: done when the connection is
        case state::idle:
        case state::closed:
            if (state_ == state::quitting) {
                commands_.push_back({command_kind::quit, 0, std::move(op), std::chrono::steady_clock::now()});
                return;
            }
            finish(op, {});
            return;
        case state::connecting:
        case state::handshaking:
        case state::reconnecting:  // the backoff wait (or the attempt) ends now
            fail(asio::error::operation_aborted);
            finish(op, {});
            return;
    }
}

void connection_impl::do_cancel(std::uint64_t ticket) {
    if (state_ == state::connecting && connect_op_ && ticket == connect_ticket_) {
        fail(asio::error::operation_aborted);
        return;
    }
    for (auto& c : commands_) {
        if (c.ticket == ticket && c.op) {
            if (c.kind == command_kind::hello) {
                fail(asio::error::operation_aborted);  // no half-open connection
            } else {
                finish(c.op, asio::error::operation_aborted);  // the reply is still dropped
            }
            return;
        }
    }
    if (auto it = acks_.find(ticket); it != acks_.end() && it->second.op) {
        finish(it->second.op, asio::error::operation_aborted);
        return;
    }
    for (auto it = receivers_.begin(); it != receivers_.end(); ++it) {
        if (it->ticket == ticket) {
            op_ptr op = std::move(it->op);
            receivers_.erase(it);
            finish(op, asio::error::operation_aborted);
            return;
        }
    }
}

// ---- writing -----------------------------------------------------------------------------------

void connection_impl::queue_frame(std::string_view bytes, op_ptr write_waiter) {
    out_.append(bytes);
    if (write_waiter) {
        out_waiters_.push_back(std::move(write_waiter));
    }
    start_write();
}

void connection_impl::start_write() {
    if (writing_now_ || out_.empty() || !link_ ||
        (state_ != state::handshaking && state_ != state::open && state_ != state::quitting)) {
        return;
    }
    // Double buffering: everything queued so far goes out in one write; what is queued while it
    // is in flight waits in out_ for the next one.
    link_->writing.swap(out_);
    writing_waiters_.swap(out_waiters_);
    writing_now_ = true;
    auto done = [self = shared_from_this(), l = link_](std::error_code ec, std::size_t) {
        if (self->link_ == l) {
            self->on_write(ec);
        }
    };
    link_->write(asio::bind_executor(strand_, std::move(done)));
}

void connection_impl::on_write(std::error_code ec) {
    writing_now_ = false;
    std::string& writing = link_->writing;
    writing.clear();
    if (state_ == state::closed || state_ == state::reconnecting) {
        return;  // fail() completed the waiters
    }
    if (ec) {
        fail(ec);
        return;
    }
    for (auto& w : writing_waiters_) {
        finish(w, {});
    }
    writing_waiters_.clear();
    if (writing.capacity() > (1U << 20)) {
        std::string().swap(writing);
    }
    start_write();
}

// ---- reading -----------------------------------------------------------------------------------

bool connection_impl::receive_full() const noexcept {
    if (received_.empty()) {
        return false;
    }
    return received_.size() >= opts_.max_receive_queue || received_bytes_ >= opts_.max_receive_bytes;
}

void connection_impl::start_read() {
    if (reading_ || !link_ || rpos_ < rlen_ ||
        (state_ != state::handshaking && state_ != state::open && state_ != state::quitting)) {
        return;
    }
    reading_ = true;
    auto done = [self = shared_from_this(), l = link_](std::error_code ec, std::size_t n) {
        if (self->link_ == l) {
            self->on_read(ec, n);
        }
    };
    link_->read_some(asio::bind_executor(strand_, std::move(done)));
}

void connection_impl::on_read(std::error_code ec, std::size_t n) {
    reading_ = false;
    if (state_ == state::closed || state_ == state::reconnecting) {
        return;
    }
    if (ec) {
        fail(ec);
        return;
    }
    rpos_ = 0;
    rlen_ = n;
    pump();
}

void connection_impl::pump() {
    if (!link_) {
        return;
    }
    while (rpos_ < rlen_ && !receive_full()) {
        auto r = decoder_.decode(std::string_view(link_->rbuf.data() + rpos_, rlen_ - rpos_));
        rpos_ += r.consumed;
        if (r.status == protocol::decode_status::need_more) {
            break;
        }
        if (r.status == protocol::decode_status::bad) {
            if (r.fatal) {
                fail(errc::bad_reply);
                return;
            }
            continue;  // a frame we cannot use, skipped by the decoder
        }
        handle(r.message);
        if (state_ == state::closed || state_ == state::reconnecting) {
            return;
        }
    }
    if (rpos_ < rlen_ || receive_full()) {
        return;  // backpressure: do_receive resumes from rpos_ once below the cap
    }
    rpos_ = rlen_ = 0;
    start_read();
}

void connection_impl::handle(const protocol::reply& r) {
    std::visit(
        [&](const auto& m) {
            using T = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<T, protocol::ok_msg>) {
                if (commands_.empty()) {
                    return;
                }
                const auto k = commands_.front().kind;
                complete_front(k == command_kind::kick || k == command_kind::quit
                                   ? std::error_code{}
                                   : make_error_code(errc::bad_reply),
                               {});
            } else if constexpr (std::is_same_v<T, protocol::err_msg>) {
                handle_err(m.code);
            } else if constexpr (std::is_same_v<T, protocol::ping_msg>) {
                queue_frame("PONG\r\n");  // the server's heartbeat: answered without the user
            } else if constexpr (std::is_same_v<T, protocol::pong_msg>) {
                if (!commands_.empty()) {
                    complete_front(commands_.front().kind == command_kind::ping
                                       ? std::error_code{}
                                       : make_error_code(errc::bad_reply),
                                   {});
                }
            } else if constexpr (std::is_same_v<T, protocol::deliver_msg>) {
                deliver(message{m.from, std::string(m.payload)});
            } else if constexpr (std::is_same_v<T, protocol::ack_msg>) {
                handle_ack(m.token, m.error);
            } else if constexpr (std::is_same_v<T, protocol::body_msg>) {
                handle_body(m.kind, m.json);
            }
        },
        r);
}

void connection_impl::handle_err(error_code code) {
    if (protocol::is_fatal(code)) {
        fail(code);  // the server closes after it (PROTOCOL.md section 7)
        return;
    }
    if (!commands_.empty() && commands_.front().kind == command_kind::hello) {
        fail(code);  // HELLO refused (not_authorized, bad_json, draining, ...): connect fails
        return;
    }
    if (code == error_code::draining) {
        // The drain notice, not a reply: no command of ours is answered with draining (SENDs
        // carry tokens, so theirs come as ACKs). The server closes once it flushed.
        draining_.store(true, std::memory_order_release);
        return;
    }
    if (code == error_code::not_authorized) {
        const bool admin = !commands_.empty() && (commands_.front().kind == command_kind::list ||
                                                  commands_.front().kind == command_kind::kick);
        if (!admin) {
            fail(code);  // kicked: the server closes the connection
            return;
        }
    }
    if (commands_.empty()) {
        return;  // nothing of ours to answer
    }
    complete_front(code, {});
}

void connection_impl::handle_ack(std::string_view token, std::optional<error_code> err) {
    std::uint64_t t = 0;
    const auto [p, ec] = std::from_chars(token.data(), token.data() + token.size(), t);
    if (ec != std::errc{} || p != token.data() + token.size()) {
        return;  // not one of our tokens
    }
    auto it = acks_.find(t);
    if (it == acks_.end()) {
        return;
    }
    pending_ack a = std::move(it->second);
    acks_.erase(it);
    if (a.counted && err) {
        send_failures_.fetch_add(1, std::memory_order_relaxed);
    }
    finish(a.op, err ? make_error_code(*err) : std::error_code{});
}

void connection_impl::handle_body(protocol::body_kind kind, std::string_view json) {
    if (commands_.empty()) {
        return;
    }
    const command_kind front = commands_.front().kind;
    const bool match = (kind == protocol::body_kind::hello && front == command_kind::hello) ||
                       (kind == protocol::body_kind::info && front == command_kind::info) ||
                       (kind == protocol::body_kind::list && front == command_kind::list) ||
                       (kind == protocol::body_kind::stats && front == command_kind::stats);
    if (!match) {
        if (front == command_kind::hello) {
            fail(errc::bad_reply);
        } else {
            complete_front(errc::bad_reply, {});
        }
        return;
    }
    if (front == command_kind::hello) {
        auto h = protocol::parse_body<protocol::hello_reply>(json, limits_);
        if (!h) {
            fail(errc::bad_reply);
            return;
        }
        hello_ = *h;
        publish_hello(hello_);
        // From here on the server's limits bound what it may send; swapping the decoder is safe
        // right after a complete frame (the next byte starts a new frame).
        limits_ = hello_.limits;
        decoder_ = protocol::reply_decoder(limits_);
        ever_open_ = true;
        if (in_reconnect_) {
            in_reconnect_ = false;
            reconnecting_.store(false, std::memory_order_release);
            draining_.store(false, std::memory_order_release);  // a new session, maybe a new server
            reconnect_event e;
            e.what = reconnect_event::kind::reconnected;
            e.old_id = lost_id_;
            e.new_id = hello_.session;
            e.attempt = attempt_;
            attempt_ = 0;
            emit(e);
        }
        set_state(state::open);
        complete_front({}, {});
        return;
    }
    reply_data d;
    d.text = std::string(json);
    complete_front({}, std::move(d));
}

void connection_impl::complete_front(std::error_code ec, reply_data&& d) {
    pending_command c = std::move(commands_.front());
    commands_.pop_front();
    d.rtt = std::chrono::steady_clock::now() - c.sent;
    finish(c.op, ec, std::move(d));
}

void connection_impl::deliver(message&& m) {
    if (!receivers_.empty()) {
        op_ptr op = std::move(receivers_.front().op);
        receivers_.pop_front();
        reply_data d;
        d.from = m.from;
        d.text = std::move(m.payload);
        finish(op, {}, std::move(d));
        return;
    }
    received_bytes_ += m.payload.size();
    received_.push_back(std::move(m));
}

// ---- ending ------------------------------------------------------------------------------------

void connection_impl::fail(std::error_code ec) {
    if (state_ == state::closed) {
        return;
    }
    if (may_reconnect(ec)) {
        drop_link(ec);
        return;
    }
    if (in_reconnect_ && !closing_) {
        // An attempt refused for good (not_authorized, unsupported_version, ...).
        reconnect_event e;
        e.what = reconnect_event::kind::gave_up;
        e.error = ec;
        e.old_id = lost_id_;
        e.attempt = attempt_;
        emit(e);
    }
    close_for_good(ec);
}

bool connection_impl::may_reconnect(std::error_code ec) const noexcept {
    if (!opts_.reconnect.enabled || !ever_open_ || closing_ || state_ == state::quitting) {
        return false;
    }
    // Kicked (the server's -ERR not_authorized closing a session) is an administrator's
    // decision, and a HELLO refused for good stays refused.
    return !final_refusal(ec);
}

void connection_impl::close_link() {
    std::error_code ignored;
    resolver_.cancel();
    if (link_) {
        link_->socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
        link_->socket().close(ignored);  // the read and write in flight complete with operation_aborted
    }
    reading_ = false;
    writing_now_ = false;
    out_.clear();
    rpos_ = rlen_ = 0;
}

void connection_impl::fail_in_flight(std::error_code ec) {
    finish(connect_op_, ec);
    auto commands = std::move(commands_);
    commands_.clear();
    for (auto& c : commands) {
        finish(c.op, ec);
    }
    // A tokened SEND without an ACK at the end is not delivered (PROTOCOL.md section 2.3) or
    // may have been: never resent.
    auto acks = std::move(acks_);
    acks_.clear();
    for (auto& [t, a] : acks) {
        finish(a.op, ec);
    }
    // The write in flight may or may not have reached the server: its waiters fail too.
    for (auto& w : writing_waiters_) {
        finish(w, ec);
    }
    writing_waiters_.clear();
    for (auto& w : out_waiters_) {
        finish(w, ec);
    }
    out_waiters_.clear();
}

void connection_impl::drop_link(std::error_code ec) {
    const bool lost = !in_reconnect_;  // a session ends here; else an attempt failed
    close_link();
    fail_in_flight(ec);  // receivers keep waiting: they get the new session's messages
    reconnect_event e;
    e.error = ec;
    if (lost) {
        in_reconnect_ = true;
        reconnecting_.store(true, std::memory_order_release);
        lost_id_ = hello_.session;
        hello_.session = protocol::session_id{};
        publish_hello(hello_);  // id() no longer names the lost session
        attempt_ = 0;
        e.what = reconnect_event::kind::lost;
    } else {
        e.what = reconnect_event::kind::attempt_failed;
        e.attempt = attempt_;
        if (opts_.reconnect.max_attempts != 0 && attempt_ >= opts_.reconnect.max_attempts) {
            e.what = reconnect_event::kind::gave_up;
            e.old_id = lost_id_;
            emit(e);
            close_for_good(ec);
            return;
        }
    }
    e.old_id = lost_id_;
    std::uniform_real_distribution<double> u(0.0, 1.0);
    e.next_delay = backoff_delay(opts_.reconnect, attempt_ + 1, std::min(u(rng_), 0.999999));
    emit(e);
    set_state(state::reconnecting);
    backoff_.expires_after(e.next_delay);
    backoff_.async_wait(asio::bind_executor(strand_, [self = shared_from_this()](std::error_code t) {
        self->on_backoff(t);
    }));
}

void connection_impl::on_backoff(std::error_code ec) {
    if (ec || state_ != state::reconnecting) {
        return;  // cancelled: closed meanwhile
    }
    ++attempt_;
    start_attempt();
}

void connection_impl::close_for_good(std::error_code ec) {
    const bool quitting = state_ == state::quitting;
    set_state(state::closed);
    in_reconnect_ = false;
    reconnecting_.store(false, std::memory_order_release);
    end_ = ec;
    backoff_.cancel();
    close_link();
    // After QUIT the server's close is the expected end: the close operations succeed (over TLS
    // the server may close without a close_notify: stream_truncated).
    const bool quit_done = quitting && (ec == asio::error::eof || ec == asio::error::connection_reset ||
                                        ec == asio::ssl::error::stream_truncated);
    for (auto& c : commands_) {
        if (c.kind == command_kind::quit && quit_done) {
            finish(c.op, {});
        }
    }
    fail_in_flight(ec);
    // Receivers wait only while received_ is empty; what was received stays for async_receive.
    auto receivers = std::move(receivers_);
    receivers_.clear();
    for (auto& r : receivers) {
        finish(r.op, ec);
    }
}

void connection_impl::emit(reconnect_event e) {
    if (on_reconnect_) {
        asio::post(events_, [h = on_reconnect_, e] { (*h)(e); });
    }
}

void connection_impl::publish_hello(const protocol::hello_reply& h) {
    std::lock_guard lk(hello_mu_);
    public_hello_ = h;
}

void connection_impl::finish(op_ptr& op, std::error_code ec, reply_data d) {
    if (!op) {
        return;
    }
    op_ptr o = std::move(op);
    d.limits = &limits_;
    o->complete(ec, std::move(d));
}

void connection_impl::set_state(state s) noexcept {
    state_ = s;
    open_.store(s == state::open, std::memory_order_release);
}

}  // namespace lariv::client::detail

namespace lariv::client {

std::chrono::milliseconds backoff_delay(const reconnect_policy& p, std::uint32_t attempt,
                                        double random01) noexcept {
    const double mult = std::max(1.0, p.multiplier);
    const double initial = static_cast<double>(std::max<std::int64_t>(0, p.initial_delay.count()));
    const double cap = static_cast<double>(std::max<std::int64_t>(0, p.max_delay.count()));
    const double grown = initial * std::pow(mult, static_cast<double>(attempt == 0 ? 0 : attempt - 1));
    const double base = std::min(cap, std::isfinite(grown) ? grown : cap);
    const double jitter = std::clamp(p.jitter, 0.0, 1.0);
    const double r = std::clamp(random01, 0.0, 1.0);
    return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(base * (1.0 - jitter * r))));
}

bool split_host_port(std::string_view server, std::string& host, std::string& port) {
    std::string_view h;
    std::string_view p;
    if (!server.empty() && server.front() == '[') {
        const auto close = server.find(']');
        if (close == std::string_view::npos || close + 1 >= server.size() || server[close + 1] != ':') {
            return false;
        }
        h = server.substr(1, close - 1);
        p = server.substr(close + 2);
    } else {
        const auto colon = server.rfind(':');
        if (colon == std::string_view::npos) {
            return false;
        }
        h = server.substr(0, colon);
        p = server.substr(colon + 1);
        if (h.find(':') != std::string_view::npos) {
            return false;  // a bare IPv6 address needs brackets
        }
    }
    if (h.empty() || p.empty()) {
        return false;
    }
    host.assign(h);
    port.assign(p);
    return true;
}

}  // namespace lariv::client
