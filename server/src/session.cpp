#include "lariv/server/session.hpp"

#include <algorithm>
#include <random>
#include <variant>

#include <asio/bind_executor.hpp>
#include <asio/buffer.hpp>
#include <asio/post.hpp>
#include <asio/write.hpp>
#include <spdlog/spdlog.h>

#include "lariv/protocol/encoder.hpp"

namespace lariv::server {

namespace {
using protocol::error_code;
constexpr auto tick_period = std::chrono::milliseconds(250);
constexpr auto close_linger = std::chrono::seconds(1);  // bound on flushing a final -ERR

/// The human-readable message of the -ERR a closing session gets.
std::string_view describe(close_reason why) {
    switch (why) {
        case close_reason::handshake_timeout:
            return "no HELLO before the handshake deadline";
        case close_reason::heartbeat_timeout:
            return "pings left unanswered";
        case close_reason::idle_timeout:
            return "idle too long";
        case close_reason::frame_timeout:
            return "frame not completed before its deadline";
        case close_reason::slow_consumer:
            return "outbound queue over its limit or write stuck; disconnected";
        case close_reason::kicked:
            return "kicked";
        case close_reason::draining:
            return "server is shutting down";
        default:
            return to_string(why);
    }
}

std::string endpoint_text(const asio::ip::tcp::socket& s) {
    std::error_code ec;
    const auto ep = s.remote_endpoint(ec);
    if (ec) {
        return "?";
    }
    return ep.address().to_string() + ":" + std::to_string(ep.port());
}
}  // namespace

session::session(registry& reg, asio::ip::tcp::socket socket)
    : reg_(reg)
    , strand_(asio::make_strand(reg.executor()))
    , socket_(std::move(socket))
    , tick_(strand_)
    , remote_(endpoint_text(socket_))
    , created_(clock::now())
    , decoder_(reg.cfg().limits)
    , last_input_(created_)
    , tokens_at_(created_) {
    std::error_code ec;
    socket_.set_option(asio::ip::tcp::no_delay(true), ec);
}

session::~session() = default;

std::string session::name() const {
    // name_ is written once, on the strand, before handshaken_ is released.
    return handshaken() ? name_ : std::string();
}

void session::start(lariv::Index index) {
    index_ = index;
    id_ = to_session_id(index);
    // Heartbeat jitter: +-10% per session, so idle sessions do not all ping at once.
    if (reg_.cfg().heartbeat_ms != 0) {
        thread_local std::minstd_rand rng(std::random_device{}());
        const auto base = static_cast<double>(reg_.cfg().heartbeat_ms);
        const double f = 0.9 + 0.2 * (static_cast<double>(rng() % 1000) / 1000.0);
        heartbeat_ = std::chrono::milliseconds(static_cast<long>(base * f));
    }
    // The rate-limit bucket starts full: a new client may send a burst at once.
    const std::uint32_t burst = reg_.hot().rate_burst.load(std::memory_order_relaxed);
    tokens_ = burst != 0 ? burst : reg_.hot().rate_limit.load(std::memory_order_relaxed);
    asio::post(strand_, [self = shared_from_this()] {
        self->arm_tick();
        self->do_read();
    });
}

void session::refuse(error_code code, std::string_view text) {
    // Never registered: tell the client why, flush, close.
    asio::post(strand_, [self = shared_from_this(), code, t = std::string(text)] {
        self->closed_ = true;
        self->closing_.store(true, std::memory_order_release);
        std::string frame;
        protocol::encode(frame, protocol::err_msg{code, t});
        {
            std::lock_guard lk(self->out_mu_);
            self->pending_ = std::move(frame);
            self->queued_.store(self->pending_.size(), std::memory_order_relaxed);
            self->write_in_flight_ = true;
            self->flush_then_close_ = true;
        }
        self->tick_.expires_after(close_linger);
        self->tick_.async_wait([self](std::error_code ec) {
            if (!ec) {
                self->finish_close();
            }
        });
        self->do_write();
    });
}

// ------------------------------------------------------------------------------------- reading

void session::do_read() {
    socket_.async_read_some(asio::buffer(rbuf_),
                            asio::bind_executor(strand_, [self = shared_from_this()](
                                                             std::error_code ec, std::size_t n) {
                                self->on_read(ec, n);
                            }));
}

void session::on_read(std::error_code ec, std::size_t n) {
    if (closed_) {
        return;
    }
    if (ec) {
        const bool eof = ec == asio::error::eof || ec == asio::error::connection_reset;
        do_close(eof ? close_reason::client_closed : close_reason::io_error);
        return;
    }
    last_input_ = clock::now();
    outstanding_pings_ = 0;  // any input proves the peer is alive
    std::string_view in(rbuf_.data(), n);
    const bool grow = n == rbuf_.size() && rbuf_.size() < (64U << 10);
    while (!in.empty() && !closed_ && !closing_.load(std::memory_order_relaxed)) {
        auto r = decoder_.decode(in);
        in.remove_prefix(r.consumed);
        if (r.status == protocol::decode_status::need_more) {
            break;
        }
        if (r.status == protocol::decode_status::bad) {
            reg_.stats().protocol_errors.fetch_add(1, std::memory_order_relaxed);
            reply_error(r.error, r.detail);
            if (r.fatal) {
                do_close(close_reason::protocol_error);
                return;
            }
            continue;
        }
        handle(r.message);
    }
    if (closed_ || closing_.load(std::memory_order_relaxed)) {
        return;
    }
    // A partial frame starts the frame deadline (slowloris); a complete one clears it.
    if (decoder_.buffered() == 0) {
        frame_started_ = {};
        decoder_.shrink();
    } else if (frame_started_ == clock::time_point{}) {
        frame_started_ = last_input_;
    }
    if (grow) {
        rbuf_.resize(rbuf_.size() * 2);  // `in` is consumed: the old bytes are no longer needed
    }
    do_read();
}

void session::handle(const protocol::command& cmd) {
    std::visit(
        [this](const auto& m) {
            using T = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<T, protocol::hello_msg>) {
                handle_hello(m);
            } else if constexpr (std::is_same_v<T, protocol::ping_msg>) {
                std::string f;
                protocol::encode(f, protocol::pong_msg{});
                reply(f);
            } else if constexpr (std::is_same_v<T, protocol::pong_msg>) {
                outstanding_pings_ = 0;
            } else if constexpr (std::is_same_v<T, protocol::quit_msg>) {
                std::string f;
                protocol::encode(f, protocol::ok_msg{"bye"});
                reply(f);
                do_close(close_reason::client_quit);
            } else if (!handshaken()) {
                reply_error(error_code::handshake_required, "send HELLO first");
            } else if constexpr (std::is_same_v<T, protocol::send_msg>) {
                handle_send(m);
            } else if constexpr (std::is_same_v<T, protocol::info_msg>) {
                if (auto s = reg_.find(m.id); s && s->handshaken()) {
                    std::string f;
                    protocol::encode(f, s->info());
                    reply(f);
                } else {
                    reply_error(reg_.missing_reason(m.id), "no live session " + m.id.to_string());
                }
            } else if constexpr (std::is_same_v<T, protocol::list_msg>) {
                if (!admin_) {
                    reply_error(error_code::not_authorized, "LIST needs the admin token");
                    return;
                }
                std::string f;
                protocol::encode(f, reg_.list(m.after, m.limit));
                reply(f);
            } else if constexpr (std::is_same_v<T, protocol::kick_msg>) {
                if (!admin_) {
                    reply_error(error_code::not_authorized, "KICK needs the admin token");
                } else if (reg_.kick(m.id)) {
                    std::string f;
                    protocol::encode(f, protocol::ok_msg{"kicked"});
                    reply(f);
                } else {
                    reply_error(reg_.missing_reason(m.id), "no live session " + m.id.to_string());
                }
            } else if constexpr (std::is_same_v<T, protocol::stats_msg>) {
                std::string f;
                protocol::encode_body(f, protocol::body_kind::stats, reg_.stats_json());
                reply(f);
            }
        },
        cmd);
}

void session::handle_hello(const protocol::hello_msg& m) {
    const config& cfg = reg_.cfg();
    if (handshaken()) {
        reply_error(error_code::bad_syntax, "HELLO was already accepted");
        return;
    }
    if (m.version != protocol::protocol_version) {
        reply_error(error_code::unsupported_version, "this server speaks version 1");
        return;
    }
    const bool is_admin = !cfg.admin_token.empty() && m.auth == cfg.admin_token;
    if (!cfg.auth_token.empty() && m.auth != cfg.auth_token && !is_admin) {
        reply_error(error_code::not_authorized, "bad auth token");
        return;
    }
    admin_ = cfg.admin_token.empty() || is_admin;
    verbose_ = m.verbose;
    name_ = m.name.substr(0, 128);
    // release: publishes name_ to other threads' info() (they acquire handshaken_).
    handshaken_.store(true, std::memory_order_release);
    reg_.stats().handshakes.fetch_add(1, std::memory_order_relaxed);
    protocol::hello_reply r;
    r.session = id_;
    r.node = reg_.node_id();
    r.server = std::string("larivd/") + LARIV_VERSION;
    r.limits = cfg.limits;
    r.heartbeat_ms = cfg.heartbeat_ms;
    std::string f;
    protocol::encode(f, r);
    reply(f);
    if (reg_.hooks_.on_open) {
        reg_.hooks_.on_open(*this);
    }
}

void session::handle_send(const protocol::send_msg& m) {
    auto answer = [&](std::optional<error_code> err, std::string_view why) {
        if (err) {
            reg_.stats().send_errors.fetch_add(1, std::memory_order_relaxed);
        }
        std::string f;
        if (!m.token.empty()) {
            protocol::encode(f, protocol::ack_msg{m.token, err});
        } else if (err) {
            protocol::encode(f, protocol::err_msg{*err, why});
        } else if (verbose_) {
            protocol::encode(f, protocol::ok_msg{});
        } else {
            return;
        }
        reply(f);
    };
    // Token bucket rate limit (per session, strand-local state).
    if (const std::uint32_t rate = reg_.hot().rate_limit.load(std::memory_order_relaxed); rate != 0) {
        const std::uint32_t burst_cfg = reg_.hot().rate_burst.load(std::memory_order_relaxed);
        const double burst = burst_cfg != 0 ? burst_cfg : rate;
        const auto now = clock::now();
        tokens_ = std::min(burst, tokens_ + std::chrono::duration<double>(now - tokens_at_).count() * rate);
        tokens_at_ = now;
        if (tokens_ < 1.0) {
            reg_.stats().rate_limited.fetch_add(1, std::memory_order_relaxed);
            answer(error_code::rate_limited, "over the send rate; retry later");
            return;
        }
        tokens_ -= 1.0;
    }
    if (reg_.hooks_.on_message && !reg_.hooks_.on_message(*this, m.to, m.payload)) {
        answer(error_code::unknown_session, "dropped by the host");
        return;
    }
    msgs_in_.fetch_add(1, std::memory_order_relaxed);
    reg_.stats().msgs_in.fetch_add(1, std::memory_order_relaxed);
    const auto err = reg_.send(m.to, id_, m.payload);
    std::string why;
    if (err) {
        why = "no live session " + m.to.to_string();
    }
    answer(err, why);
}

// ------------------------------------------------------------------------------------- writing

void session::reply(std::string_view frame) { (void)enqueue(frame, {}, {}, true); }

void session::reply_error(error_code code, std::string_view text) {
    std::string f;
    protocol::encode(f, protocol::err_msg{code, text});
    reply(f);
}

session::enqueue_result session::deliver(protocol::session_id from, std::string_view payload) {
    std::string header;
    protocol::encode_deliver_header(header, from, payload.size());
    const auto r = enqueue(header, payload, "\r\n", false);
    if (r == enqueue_result::ok) {
        msgs_out_.fetch_add(1, std::memory_order_relaxed);
    }
    return r;
}

session::enqueue_result session::send_frame(std::string_view frame) {
    return enqueue(frame, {}, {}, false);
}

session::enqueue_result session::enqueue(std::string_view a,
                                         std::string_view b,
                                         std::string_view c,
                                         bool own) {
    const std::size_t n = a.size() + b.size() + c.size();
    bool start = false;
    bool overflow = false;
    {
        std::lock_guard lk(out_mu_);
        if (closing_.load(std::memory_order_relaxed) && !own) {
            return enqueue_result::closed;
        }
        if (flush_then_close_ && !own) {
            return enqueue_result::closed;
        }
        const std::size_t cap = reg_.hot().max_queue_bytes.load(std::memory_order_relaxed);
        if (pending_.size() + writing_.size() + n > cap) {
            overflow = true;
        } else {
            pending_.append(a).append(b).append(c);
            queued_.store(pending_.size() + writing_.size(), std::memory_order_relaxed);
            if (!write_in_flight_) {
                write_in_flight_ = true;
                start = true;
            }
        }
    }
    if (overflow) {
        if (reg_.cfg().slow_consumer == slow_consumer_policy::disconnect) {
            close(close_reason::slow_consumer);
        }
        return enqueue_result::queue_full;
    }
    if (start) {
        asio::post(strand_, [self = shared_from_this()] { self->do_write(); });
    }
    return enqueue_result::ok;
}

void session::do_write() {
    {
        std::lock_guard lk(out_mu_);
        if (!writing_.empty() || pending_.empty()) {
            // Nothing new, or a write is already running from this buffer.
            if (writing_.empty()) {
                write_in_flight_ = false;
            }
            return;
        }
        writing_.swap(pending_);
        write_started_ = clock::now();
    }
    asio::async_write(socket_, asio::buffer(writing_),
                      asio::bind_executor(strand_, [self = shared_from_this()](
                                                       std::error_code ec, std::size_t n) {
                          self->on_write(ec, n);
                      }));
}

void session::on_write(std::error_code ec, std::size_t /*n*/) {
    bool more = false;
    bool done_closing = false;
    {
        std::lock_guard lk(out_mu_);
        writing_.clear();
        if (writing_.capacity() > (64U << 10)) {
            std::string().swap(writing_);  // do not keep a large buffer for an idle session
        }
        write_started_ = {};
        queued_.store(pending_.size(), std::memory_order_relaxed);
        if (ec) {
            pending_.clear();
            write_in_flight_ = false;
        } else if (!pending_.empty()) {
            more = true;
        } else {
            write_in_flight_ = false;
            done_closing = flush_then_close_;
        }
    }
    if (ec) {
        if (!closed_) {
            do_close(close_reason::io_error);
        }
        finish_close();
        return;
    }
    if (more) {
        do_write();
    } else if (done_closing) {
        finish_close();
    }
}

// ------------------------------------------------------------------------------------ deadlines

void session::arm_tick() {
    tick_.expires_after(tick_period);
    tick_.async_wait([self = shared_from_this()](std::error_code ec) {
        if (!ec) {
            self->on_tick();
        }
    });
}

void session::on_tick() {
    if (closed_) {
        return;
    }
    const config& cfg = reg_.cfg();
    const auto now = clock::now();
    using ms = std::chrono::milliseconds;
    if (!handshaken() && now - created_ > ms(cfg.handshake_timeout_ms)) {
        do_close(close_reason::handshake_timeout);
        return;
    }
    if (frame_started_ != clock::time_point{} && now - frame_started_ > ms(cfg.frame_timeout_ms)) {
        do_close(close_reason::frame_timeout);
        return;
    }
    {
        std::lock_guard lk(out_mu_);
        if (write_started_ != clock::time_point{} && now - write_started_ > ms(cfg.write_deadline_ms)) {
            // The client does not read: its socket buffer is full and our write cannot finish.
            write_started_ = {};
            flush_then_close_ = true;
        }
    }
    if (flush_then_close_ && !closing_.load(std::memory_order_relaxed)) {
        do_close(close_reason::slow_consumer);
        return;
    }
    if (const auto idle = reg_.hot().idle_timeout_ms.load(std::memory_order_relaxed);
        idle != 0 && now - last_input_ > ms(idle)) {
        do_close(close_reason::idle_timeout);
        return;
    }
    if (heartbeat_.count() != 0 && now - last_input_ > heartbeat_ * (outstanding_pings_ + 1)) {
        if (outstanding_pings_ >= cfg.max_outstanding_pings) {
            do_close(close_reason::heartbeat_timeout);
            return;
        }
        ++outstanding_pings_;
        std::string f;
        protocol::encode(f, protocol::ping_msg{});
        reply(f);
    }
    arm_tick();
}

// -------------------------------------------------------------------------------------- closing

void session::close(close_reason why) {
    asio::post(strand_, [self = shared_from_this(), why] { self->do_close(why); });
}

void session::drain() {
    asio::post(strand_, [self = shared_from_this()] { self->do_close(close_reason::draining); });
}

void session::do_close(close_reason why) {
    if (closed_) {
        return;
    }
    closed_ = true;
    closing_.store(true, std::memory_order_relaxed);
    reg_.remove(index_);  // exactly once per session: closed_ guards it, Lariv's remove too
    reg_.stats().closed[static_cast<std::size_t>(why)].fetch_add(1, std::memory_order_relaxed);
    if (why != close_reason::client_closed && why != close_reason::client_quit) {
        spdlog::debug("session {} {} closed: {}", id_.to_string(), remote_, to_string(why));
    }
    if (reg_.hooks_.on_close) {
        reg_.hooks_.on_close(*this, why);
    }
    std::optional<error_code> err = error_for(why);
    bool flush = false;
    {
        std::lock_guard lk(out_mu_);
        if (why == close_reason::slow_consumer) {
            pending_.clear();  // the client is not reading: do not queue more for it
        }
        if (err) {
            std::string f;
            protocol::encode(f, protocol::err_msg{*err, describe(why)});
            pending_.append(f);
        }
        flush_then_close_ = true;
        flush = !pending_.empty() || write_in_flight_;
        if (flush && !write_in_flight_) {
            write_in_flight_ = true;
            asio::post(strand_, [self = shared_from_this()] { self->do_write(); });
        }
    }
    if (!flush || why == close_reason::client_closed || why == close_reason::io_error) {
        finish_close();
        return;
    }
    // Flush the final frames, but never wait longer than the linger bound. A drain flushes what
    // was accepted for the client (ACKed messages) for up to the drain timeout.
    tick_.expires_after(why == close_reason::draining
                            ? std::chrono::milliseconds(reg_.cfg().drain_timeout_ms)
                            : std::chrono::milliseconds(close_linger));
    tick_.async_wait([self = shared_from_this()](std::error_code e) {
        if (!e) {
            self->finish_close();
        }
    });
}

void session::finish_close() {
    std::error_code ec;
    if (socket_.is_open()) {
        socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
        socket_.close(ec);
    }
    tick_.cancel();
    if (!finished_) {
        finished_ = true;
        // release: pairs with the acquire in registry::open_connections() (drain's end).
        reg_.open_.fetch_sub(1, std::memory_order_release);
    }
}

protocol::session_info session::info() const {
    protocol::session_info i;
    i.id = id_;
    i.name = name();
    i.age_ms = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - created_).count());
    i.queued_bytes = queued_bytes();
    i.msgs_in = msgs_in_.load(std::memory_order_relaxed);
    i.msgs_out = msgs_out_.load(std::memory_order_relaxed);
    return i;
}

}  // namespace lariv::server
