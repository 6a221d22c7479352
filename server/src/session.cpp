// The Lariv-protocol session's transport: start, read loop, bounded write queue, deadlines and
// closing (the state machine's moves; session_state.hpp). The commands are in
// session_commands.cpp.
#include "lariv/server/session.hpp"

#include <algorithm>
#include <random>

#include <asio/dispatch.hpp>
#include <asio/post.hpp>
#include <asio/ssl/error.hpp>

#include "lariv/protocol/encoder.hpp"
#include "lariv/server/log.hpp"

namespace lariv::server {

namespace {
using protocol::error_code;
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
        case close_reason::shutdown:
            return "server is shutting down";
        case close_reason::host_error:
            return "internal error in the host";
        default:
            return to_string(why);
    }
}
}  // namespace

session::session(std::shared_ptr<detail::registry_core> core, const asio::any_io_executor& ex,
                 std::string remote)
    : strand_(asio::make_strand(ex))
    , core_(std::move(core))
    , deadlines_(detail::deadline_queue::of(ex))
    , remote_(std::move(remote))
    , decoder_(core_->options().limits)
    , last_input_(created_)
    , tokens_at_(created_) {}

session::~session() {
    core_->release_ip(ip_key_);  // never finished (its io_context stopped): give the place back
}

std::string session::name() const {
    // name_ is written once, on the strand, before handshaken_ is released.
    return handshaken() ? name_ : std::string();
}

void session::start(lariv::Index index) {
    const registry_options& o = core_->options();
    index_ = index;
    published_ = true;
    // Heartbeat jitter: +-10% per session, so idle sessions do not all ping at once.
    if (o.heartbeat_ms != 0) {
        thread_local std::minstd_rand rng(std::random_device{}());
        const auto base = static_cast<double>(o.heartbeat_ms);
        const double f = 0.9 + 0.2 * (static_cast<double>(rng() % 1000) / 1000.0);
        heartbeat_ = std::chrono::milliseconds(static_cast<long>(base * f));
    }
    // The rate-limit bucket starts full: a new client may send a burst at once.
    const std::uint32_t burst = core_->hot().rate_burst.load(std::memory_order_relaxed);
    tokens_ = burst != 0 ? burst : core_->hot().rate_limit.load(std::memory_order_relaxed);
    // Visible from here on (seq_cst: "admission vs drain", registry.cpp). Everything above is
    // published with it.
    state_.must_move(session_state::handshaking, std::memory_order_seq_cst);
    // dispatch: on an I/O thread (the listener's accept handler) the new strand is free and
    // this runs here, with no handler through the scheduler and no other thread woken for it;
    // from any other thread it is queued, as a post would be.
    asio::dispatch(strand_, [self = shared_from_this()] {
        if (self->closed_) {
            return;  // closed (kick, drain, shutdown) before its first handler ran
        }
        self->arm_tick();
        self->start_read();
    });
}

void session::refuse(error_code code, std::string_view text) {
    // Never registered (state accepted): tell the client why, flush, close.
    asio::post(strand_, [self = shared_from_this(), code, t = std::string(text)] {
        self->closed_ = true;
        self->closing_.store(true, std::memory_order_release);
        self->state_.must_move(session_state::closing);
        std::string frame;
        protocol::encode(frame, protocol::err_msg{code, t});
        {
            std::lock_guard lk(self->out_mu_);
            self->pending_ = std::move(frame);
            self->queued_.store(self->pending_.size(), std::memory_order_relaxed);
            self->write_in_flight_ = true;
            self->flush_then_close_ = true;
        }
        self->arm_linger(close_linger);
        self->do_write();
    });
}

// ------------------------------------------------------------------------------------- reading

char* session::thread_read_buffer() {
    // One per I/O thread, for every session it reads on readiness: the bytes are decoded (and
    // a partial frame copied into the decoder) before the handler returns.
    thread_local const std::unique_ptr<char[]> buf(new char[read_buffer_size]);
    return buf.get();
}

void session::on_read(std::error_code ec, std::string_view in) {
    if (closed_) {
        return;
    }
    if (ec) {
        // A TLS client that closes its socket without a close_notify (ssl::error::stream_truncated)
        // has closed the connection too; the protocol's framing makes truncation detectable.
        const bool eof = ec == asio::error::eof || ec == asio::error::connection_reset ||
                         ec == asio::ssl::error::stream_truncated;
        do_close(eof ? close_reason::client_closed : close_reason::io_error);
        return;
    }
    last_input_ = clock::now();
    last_input_at_.store(last_input_.time_since_epoch().count(), std::memory_order_relaxed);
    bytes_in_.store(bytes_in_.load(std::memory_order_relaxed) + in.size(), std::memory_order_relaxed);
    outstanding_pings_ = 0;  // any input proves the peer is alive
    // A draining session goes on reading until its -ERR draining is written out, and answers
    // every frame it reads (a SEND gets draining: PROTOCOL.md 2.3): what the client sent before
    // it could see the notice is answered. After that it stops reading, so a client that keeps
    // writing cannot hold the drain open. Other closings stop reading at once.
    auto stop = [this] {
        return closed_ || (closing_.load(std::memory_order_relaxed) && (!draining_ || drain_notice_left_ == 0));
    };
    // The replies of this read are written once, after it (enqueue defers them while reading_),
    // whichever way the loop ends: a close in the middle lingers on the write started here.
    reading_ = true;
    while (!in.empty() && !stop()) {
        auto r = decoder_.decode(in);
        in.remove_prefix(r.consumed);
        if (r.status == protocol::decode_status::need_more) {
            break;
        }
        if (r.status == protocol::decode_status::bad) {
            core_->stats().protocol_errors.fetch_add(1, std::memory_order_relaxed);
            reply_error(r.error, r.detail);
            if (r.fatal) {
                do_close(close_reason::protocol_error);
                break;  // stop() holds now
            }
            continue;
        }
        handle(r.message);
    }
    reading_ = false;
    if (std::exchange(flush_after_read_, false)) {
        do_write();
    }
    if (stop()) {
        return;
    }
    // A partial frame starts the frame deadline (slowloris); a complete one clears it.
    if (decoder_.buffered() == 0) {
        frame_started_ = {};
        decoder_.shrink();
    } else if (frame_started_ == clock::time_point{}) {
        frame_started_ = last_input_;
        deadline_started(frame_started_ + std::chrono::milliseconds(core_->options().frame_timeout_ms));
    }
    start_read();
}

// ------------------------------------------------------------------------------------- writing

void session::reply(std::string_view frame) {
    if (held_.empty()) {
        (void)enqueue(frame, {}, {}, true);
        return;
    }
    // Behind a pending remote answer: hold it, in order.
    if (!held_.back().ready) {
        held_.push_back({true, {}});
    }
    held_.back().bytes.append(frame);
    held_bytes_ += frame.size();
    if (held_bytes_ > core_->hot().max_queue_bytes.load(std::memory_order_relaxed)) {
        close(close_reason::slow_consumer);  // pipelining past the cap behind a slow answer
    }
}

void session::remote_request(bool kick, protocol::session_id target) {
    if (remote_pending_ >= max_remote_requests) {
        reply_error(error_code::rate_limited, "too many INFO/KICK of other nodes' sessions in flight");
        return;
    }
    ++remote_pending_;
    const std::uint64_t seq = held_base_ + held_.size();
    held_.push_back({false, {}});
    detail::remote_router* r = core_->router();
    r->request(kick, target,
               [self = shared_from_this(), seq, kick, target](std::optional<error_code> err, std::string json) {
                   // Any thread: build the reply and fill the slot on the strand.
                   std::string f;
                   if (err) {
                       protocol::encode(f, protocol::err_msg{*err, *err == error_code::node_unreachable
                                                                       ? "no link to the session's node"
                                                                       : "no live session " + target.to_string()});
                   } else if (kick) {
                       protocol::encode(f, protocol::ok_msg{"kicked"});
                   } else {
                       protocol::encode(f, protocol::body_msg{protocol::body_kind::info, json});
                   }
                   asio::post(self->strand_, [self, seq, f = std::move(f)]() mutable { self->fill_slot(seq, std::move(f)); });
               });
}

void session::fill_slot(std::uint64_t seq, std::string frame) {
    --remote_pending_;
    if (seq < held_base_ || seq - held_base_ >= held_.size()) {
        return;
    }
    reply_slot& slot = held_[seq - held_base_];
    slot.ready = true;
    held_bytes_ += frame.size();
    slot.bytes = std::move(frame);
    std::size_t done = 0;
    for (; done < held_.size() && held_[done].ready; ++done) {
        held_bytes_ -= held_[done].bytes.size();
        (void)enqueue(held_[done].bytes, {}, {}, true);
    }
    held_.erase(held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(done));
    held_base_ += done;
}

void session::deliver_ack(std::string_view token, std::optional<error_code> err) {
    if (closing_.load(std::memory_order_relaxed)) {
        return;
    }
    thread_local std::string f;
    f.clear();
    protocol::encode(f, protocol::ack_msg{token, err});
    (void)enqueue(f, {}, {}, true);
}

void session::reply_error(error_code code, std::string_view text) {
    std::string f;
    protocol::encode(f, protocol::err_msg{code, text});
    reply(f);
}

deliver_result session::deliver(protocol::session_id from, std::string_view payload) {
    // The header on the stack: no allocation per routed message (the frame's bytes are copied
    // once, into the target's queue).
    char header[protocol::max_deliver_header_size];
    const std::size_t n = protocol::format_deliver_header(header, from, payload.size());
    const auto r = enqueue({header, n}, payload, "\r\n", false);
    if (r == deliver_result::ok) {
        msgs_out_.fetch_add(1, std::memory_order_relaxed);
    }
    return r;
}

deliver_result session::send_frame(std::string_view frame) { return enqueue(frame, {}, {}, false); }

deliver_result session::enqueue(std::string_view a, std::string_view b, std::string_view c, bool own) {
    const std::size_t n = a.size() + b.size() + c.size();
    bool start = false;
    bool overflow = false;
    {
        std::lock_guard lk(out_mu_);
        if (!own && (closing_.load(std::memory_order_relaxed) || flush_then_close_)) {
            return deliver_result::closed;
        }
        const std::size_t cap = core_->hot().max_queue_bytes.load(std::memory_order_relaxed);
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
        // `drop` drops routed messages; a reply to the session's own command is never dropped
        // (every SEND the server reads is answered): a client that does not read its own
        // replies is a slow consumer under either policy.
        if (own || core_->options().slow_consumer == slow_consumer_policy::disconnect) {
            close(close_reason::slow_consumer);
        }
        return deliver_result::queue_full;
    }
    if (start) {
        // A reply to a command of the read being handled (the strand, in on_read): written once
        // at the end of that read, with every other reply it produced, instead of through a
        // posted handler. Any other caller (another session's thread, a timer) posts.
        if (strand_.running_in_this_thread() && reading_) {
            flush_after_read_ = true;
        } else {
            post_write();
        }
    }
    return deliver_result::ok;
}

void session::post_write() {
    asio::post(strand_, [self = shared_from_this()] { self->do_write(); });
}

void session::do_write() {
    clock::time_point write_due;
    {
        std::lock_guard lk(out_mu_);
        if (finished_ || !writing_.empty() || pending_.empty()) {
            // Closed, nothing new, or a write is already running from this buffer.
            if (writing_.empty()) {
                write_in_flight_ = false;
            }
            return;
        }
        writing_.swap(pending_);
        write_started_ = clock::now();
        write_due = write_started_ + std::chrono::milliseconds(core_->options().write_deadline_ms);
    }
    // First what the socket takes now: the usual case for a reader that keeps up, and no
    // completion goes through the scheduler then. What is left goes out asynchronously, under
    // the write deadline (a write that finished here needs none).
    std::error_code ec;
    const std::size_t done = write_now(ec);
    if (ec || done == writing_.size()) {
        if (write_done(ec, done)) {
            post_write();  // more came meanwhile: the next write takes its turn, as a completion would
        }
        return;
    }
    deadline_started(write_due);
    start_write(done);
}

void session::on_write(std::error_code ec, std::size_t n) {
    if (write_done(ec, n)) {
        do_write();
    }
}

bool session::write_done(std::error_code ec, std::size_t n) {
    bytes_out_.store(bytes_out_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    if (write_started_ != clock::time_point{}) {  // read on the strand, as do_write wrote it
        core_->stats().write_latency.observe_ns(static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - write_started_).count()));
    }
    if (draining_) {
        drain_notice_left_ -= std::min(drain_notice_left_, n);  // strand only
    }
    bool more = false;
    bool done_closing = false;
    {
        std::lock_guard lk(out_mu_);
        writing_.clear();
        // Keep the buffer while more is queued (a busy session swaps the two buffers back and
        // forth without allocating); give it back once the queue is empty, so an idle session
        // holds no write buffer (its +HELLO's 200-odd bytes were most of one), and never keep
        // more than 64 KiB.
        if (pending_.empty() || writing_.capacity() > (64U << 10)) {
            std::string().swap(writing_);
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
        return false;
    }
    if (!more && done_closing) {
        finish_close();
    }
    return more;
}

// ------------------------------------------------------------------------------------ deadlines

// One timer per session, armed for the earliest deadline that is running (handshake, frame,
// write, idle, heartbeat) and for nothing when none is: an idle session with heartbeats and idle
// timeouts off costs no timer at all, and an active one wakes once per deadline period, not per
// message. Input does not re-arm it: when it fires, on_tick() re-checks with the current times
// and re-arms for the next deadline. A deadline that starts later and may come first (a partial
// frame, a write) re-arms it only when it is due before the armed expiry (deadline_started()).

session::clock::time_point session::next_deadline() {
    const registry_options& o = core_->options();
    using ms = std::chrono::milliseconds;
    auto due = clock::time_point::max();
    auto take = [&due](clock::time_point t) { due = std::min(due, t); };
    if (!handshaken()) {
        take(created_ + ms(o.handshake_timeout_ms));
    }
    if (frame_started_ != clock::time_point{}) {
        take(frame_started_ + ms(o.frame_timeout_ms));
    }
    {
        std::lock_guard lk(out_mu_);
        if (write_started_ != clock::time_point{}) {
            take(write_started_ + ms(o.write_deadline_ms));
        }
    }
    if (const auto idle = core_->hot().idle_timeout_ms.load(std::memory_order_relaxed); idle != 0) {
        take(last_input_ + ms(idle));
    }
    if (heartbeat_.count() != 0) {
        take(last_input_ + heartbeat_ * (outstanding_pings_ + 1));
    }
    return due;
}

void session::arm_tick() {
    // A closing session's one deadline is its linger (arm_linger): never touch it then.
    if (closed_ || closing_.load(std::memory_order_relaxed)) {
        return;
    }
    const auto due = next_deadline();
    if (due == armed_) {
        return;
    }
    if (due == clock::time_point::max()) {
        armed_ = due;
        deadlines_.cancel(*this);
    } else {
        schedule_at(due);
    }
}

void session::arm_linger(clock::duration d) {
    linger_due_ = clock::now() + d;
    schedule_at(linger_due_);
}

void session::schedule_at(clock::time_point due) {
    armed_ = due;
    deadlines_.schedule(timed_self(), due);  // replaces the deadline scheduled before
}

void session::deadline_due(std::shared_ptr<detail::timed> self) {
    // The queue's thread, any of the context's: the session's state is the strand's.
    // The aliasing constructors: timed is a private base, which std::static_pointer_cast cannot see.
    asio::post(strand_, [s = std::shared_ptr<session>(std::move(self), this)] { s->on_tick(); });
}

void session::deadline_started(clock::time_point due) {
    if (due < armed_) {
        arm_tick();
    }
}

void session::on_tick() {
    // The deadline fired and left the queue; one scheduled since (a deadline that started
    // earlier, on the strand before this ran) is still there, and arm_tick below replaces it.
    armed_ = clock::time_point::max();
    core_->stats().timer_wakes.fetch_add(1, std::memory_order_relaxed);
    if (finished_) {
        return;
    }
    const auto now = clock::now();
    if (closed_ || closing_.load(std::memory_order_relaxed)) {
        // Closing (or draining): the only deadline is the linger. Past it, stop flushing.
        if (linger_due_ == clock::time_point::max()) {
            return;  // closing without a linger: finish_close comes from the flush
        }
        if (now < linger_due_) {
            schedule_at(linger_due_);
            return;
        }
        if (state_.load() == session_state::draining) {
            core_->note_drain_cut();  // the drain did not flush in time: shutdown reports timed_out
        }
        finish_close();
        return;
    }
    const registry_options& o = core_->options();
    using ms = std::chrono::milliseconds;
    if (!handshaken() && now - created_ >= ms(o.handshake_timeout_ms)) {
        do_close(close_reason::handshake_timeout);
        return;
    }
    if (frame_started_ != clock::time_point{} && now - frame_started_ >= ms(o.frame_timeout_ms)) {
        do_close(close_reason::frame_timeout);
        return;
    }
    {
        std::lock_guard lk(out_mu_);
        if (write_started_ != clock::time_point{} && now - write_started_ >= ms(o.write_deadline_ms)) {
            // The client does not read: its socket buffer is full and our write cannot finish.
            write_started_ = {};
            flush_then_close_ = true;
        }
    }
    if (flush_then_close_ && !closing_.load(std::memory_order_relaxed)) {
        do_close(close_reason::slow_consumer);
        return;
    }
    if (const auto idle = core_->hot().idle_timeout_ms.load(std::memory_order_relaxed);
        idle != 0 && now - last_input_ >= ms(idle)) {
        do_close(close_reason::idle_timeout);
        return;
    }
    if (heartbeat_.count() != 0 && now - last_input_ >= heartbeat_ * (outstanding_pings_ + 1)) {
        if (outstanding_pings_ >= o.max_outstanding_pings) {
            do_close(close_reason::heartbeat_timeout);
            return;
        }
        if (outstanding_pings_++ == 0) {
            ping_sent_ = now;  // its PONG gives the round trip (/connz rtt)
        }
        std::string f;
        protocol::encode(f, protocol::ping_msg{});
        reply(f);
    }
    arm_tick();
}

// -------------------------------------------------------------------------------------- closing

void session::close(close_reason why) {
    asio::post(strand_, [self = shared_from_this(), why] {
        if (why == close_reason::shutdown && self->closed_) {
            self->finish_close();  // already lingering: cut the linger short
            return;
        }
        self->do_close(why);
    });
}

void session::drain() {
    asio::post(strand_, [self = shared_from_this()] { self->begin_drain(); });
}

void session::begin_drain() {
    // Stays visible (so a shutdown whose grace ends can still reach it) but is no longer
    // routable; what was accepted for the client is flushed, then it closes. It goes on reading
    // meanwhile and answers what it reads (a SEND gets draining), so no tokened SEND read before
    // the close goes unanswered.
    if (closed_ || !state_.move(session_state::draining)) {
        return;
    }
    draining_ = true;
    closing_.store(true, std::memory_order_relaxed);
    {
        std::lock_guard lk(out_mu_);
        std::string f;
        protocol::encode(f, protocol::err_msg{error_code::draining, describe(close_reason::draining)});
        pending_.append(f);
        queued_.store(pending_.size() + writing_.size(), std::memory_order_relaxed);
        // Bytes to write until the notice is out (what is in flight, what is queued, the notice).
        drain_notice_left_ = writing_.size() + pending_.size();
        flush_then_close_ = true;
        if (!write_in_flight_) {
            write_in_flight_ = true;
            post_write();
        }
    }
    arm_linger(core_->drain_linger());  // on_tick cuts the drain then
}

void session::leave_registry(close_reason why) {
    if (closed_) {
        return;
    }
    closed_ = true;
    closing_.store(true, std::memory_order_relaxed);
    // Entering closing is where a session leaves the registry, exactly once (session_state.hpp).
    state_.must_move(session_state::closing);
    if (published_) {
        core_->remove(index_);
    }
    core_->stats().closed[static_cast<std::size_t>(why)].fetch_add(1, std::memory_order_relaxed);
    if (published_) {
        core_->record_closed(*this, why);
    }
    // A close the client asked for (FIN, QUIT) is routine: trace; any other reason: debug.
    const bool routine = why == close_reason::client_closed || why == close_reason::client_quit;
    log::event(routine ? spdlog::level::trace : spdlog::level::debug, "session closed", [&] {
        return log::fields{
            {"session", id_.to_string()},
            {"remote", remote_},
            {"name", name_},
            {"reason", to_string(why)},
            {"duration_ms", std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - created_).count()},
            {"msgs_in", msgs_in_.load(std::memory_order_relaxed)},
            {"msgs_out", msgs_out_.load(std::memory_order_relaxed)},
            {"bytes_in", bytes_in_.load(std::memory_order_relaxed)},
            {"bytes_out", bytes_out_.load(std::memory_order_relaxed)},
            {"queued_bytes", queued_.load(std::memory_order_relaxed)},
        };
    });
    if (const auto& h = core_->host_hooks(); h.on_close && published_) {
        (void)core_->run_hook([&] { h.on_close(*this, why); });  // a throw is counted; the close goes on
    }
}

void session::do_close(close_reason why) {
    if (closed_) {
        return;
    }
    const bool was_draining = state_.load() == session_state::draining;
    leave_registry(why);
    if (why == close_reason::shutdown || was_draining) {
        finish_close();  // the registry is going away or the grace is over: no linger
        return;
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
            post_write();
        }
    }
    if (!flush || why == close_reason::client_closed || why == close_reason::io_error) {
        finish_close();
        return;
    }
    // Flush the final frames, but never wait longer than the linger bound.
    arm_linger(close_linger);
}

void session::finish_close() {
    if (finished_) {
        return;
    }
    if (state_.load() == session_state::draining) {
        leave_registry(close_reason::draining);  // a drain that flushed (or was cut) ends here
    }
    finished_ = true;
    core_->release_ip(ip_key_);
    ip_key_.clear();
    close_stream();
    deadlines_.cancel(*this);
    armed_ = clock::time_point::max();
    state_.move(session_state::closed);
    core_->connection_closed();
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

session_base::connection_stats session::connection() const {
    connection_stats c;
    c.bytes_in = bytes_in_.load(std::memory_order_relaxed);
    c.bytes_out = bytes_out_.load(std::memory_order_relaxed);
    const clock::time_point last{clock::duration(last_input_at_.load(std::memory_order_relaxed))};
    c.idle_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    clock::now() - (last == clock::time_point{} ? created_ : last))
                    .count();
    c.rtt_us = rtt_us_.load(std::memory_order_relaxed);
    return c;
}

}  // namespace lariv::server
