// The Lariv wire-protocol handler: one function per command (PROTOCOL.md section 4). It runs on
// the session's strand and speaks to the registry core; the transport is session.cpp.
#include <string>
#include <variant>

#include "lariv/protocol/encoder.hpp"
#include "lariv/server/detail/secret.hpp"
#include "lariv/server/registry.hpp"
#include "lariv/server/session.hpp"

namespace lariv::server {

namespace {
using protocol::error_code;

/// The -ERR for an admin command without admin rights.
std::string_view admin_refusal(const registry_options& cfg, bool is_list) {
    if (cfg.admin_token.empty()) {
        return "admin commands are disabled: set admin_token";
    }
    return is_list ? "LIST needs the admin token" : "KICK needs the admin token";
}
}  // namespace

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
                if (ping_sent_ != clock::time_point{}) {
                    rtt_us_.store(std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - ping_sent_)
                                      .count(),
                                  std::memory_order_relaxed);
                    ping_sent_ = {};
                }
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
                if (core_->is_remote(m.id)) {
                    remote_request(false, m.id);
                } else if (auto s = core_->find(m.id); s && s->routable()) {
                    std::string f;
                    protocol::encode(f, s->info());
                    reply(f);
                } else {
                    reply_error(core_->missing_reason(m.id), "no live session " + m.id.to_string());
                }
            } else if constexpr (std::is_same_v<T, protocol::list_msg>) {
                if (!admin_) {
                    reply_error(error_code::not_authorized, admin_refusal(core_->options(), true));
                    return;
                }
                std::string f;
                // The body never passes the max_json announced in +HELLO: the page stops early
                // and its "next" cursor carries on (PROTOCOL.md 2.4).
                protocol::encode(f, core_->list(m.after, m.limit, {}, core_->options().limits.max_json));
                reply(f);
            } else if constexpr (std::is_same_v<T, protocol::kick_msg>) {
                if (!admin_) {
                    reply_error(error_code::not_authorized, admin_refusal(core_->options(), false));
                } else if (core_->is_remote(m.id)) {
                    remote_request(true, m.id);
                } else if (core_->kick(m.id, close_reason::kicked)) {
                    std::string f;
                    protocol::encode(f, protocol::ok_msg{"kicked"});
                    reply(f);
                } else {
                    reply_error(core_->missing_reason(m.id), "no live session " + m.id.to_string());
                }
            } else if constexpr (std::is_same_v<T, protocol::stats_msg>) {
                std::string f;
                protocol::encode_body(f, protocol::body_kind::stats, detail::stats_json(*core_));
                reply(f);
            }
        },
        cmd);
}

void session::handle_hello(const protocol::hello_msg& m) {
    const registry_options& cfg = core_->options();
    if (handshaken()) {
        reply_error(error_code::bad_syntax, "HELLO was already accepted");
        return;
    }
    if (m.version != protocol::protocol_version) {
        reply_error(error_code::unsupported_version, "this server speaks version 1");
        return;
    }
    // `auth` carries either token (PROTOCOL.md 2.1): the admin token also admits a client where
    // auth_token is set. An auth that matches no configured token is refused, even where none
    // is required (a mistyped admin token must not silently connect without admin rights).
    const bool is_admin = !cfg.admin_token.empty() && detail::same_secret(m.auth, cfg.admin_token);
    const bool is_client = cfg.auth_token.empty() ? m.auth.empty() : detail::same_secret(m.auth, cfg.auth_token);
    if (!is_admin && !is_client) {
        core_->note_auth_failure(remote_);
        reply_error(error_code::not_authorized, "bad auth token");
        return;
    }
    admin_ = is_admin;
    verbose_ = m.verbose;
    name_ = m.name.substr(0, 128);
    // release: publishes name_ to other threads' info() (they acquire handshaken_).
    handshaken_.store(true, std::memory_order_release);
    // Routable from here on (a drain that already moved it to draining wins: it stays unroutable).
    state_.move(session_state::live);
    // The handshake deadline stops running: schedule the next one (the heartbeat, or none), so
    // that an idle session is not woken once more for a deadline that no longer applies.
    arm_tick();
    core_->stats().handshakes.fetch_add(1, std::memory_order_relaxed);
    core_->stats().handshake_latency.observe_ns(static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - created_).count()));
    protocol::hello_reply r;
    r.session = id_;
    r.node = cfg.node_id;
    r.server = std::string("larivd/") + LARIV_VERSION;
    r.limits = cfg.limits;
    r.heartbeat_ms = cfg.heartbeat_ms;
    std::string f;
    protocol::encode(f, r);
    reply(f);
    if (const auto& h = core_->host_hooks(); h.on_open) {
        if (!core_->run_hook([&] { h.on_open(*this); })) {
            do_close(close_reason::host_error);
        }
    }
}

void session::handle_send(const protocol::send_msg& m) {
    auto answer = [&](std::optional<error_code> err, std::string_view why) {
        if (err) {
            core_->stats().send_errors.fetch_add(1, std::memory_order_relaxed);
        }
        // One reply buffer per thread, reused: an ACK costs no allocation (reply() copies it
        // into the queue).
        thread_local std::string f;
        f.clear();
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
    if (draining_) {
        answer(error_code::draining, "the server is draining");
        return;
    }
    // Token bucket rate limit (per session, strand-local state).
    if (const std::uint32_t rate = core_->hot().rate_limit.load(std::memory_order_relaxed); rate != 0) {
        const std::uint32_t burst_cfg = core_->hot().rate_burst.load(std::memory_order_relaxed);
        const double burst = burst_cfg != 0 ? burst_cfg : rate;
        const auto now = clock::now();
        tokens_ = std::min(burst, tokens_ + std::chrono::duration<double>(now - tokens_at_).count() * rate);
        tokens_at_ = now;
        if (tokens_ < 1.0) {
            core_->stats().rate_limited.fetch_add(1, std::memory_order_relaxed);
            answer(error_code::rate_limited, "over the send rate; retry later");
            return;
        }
        tokens_ -= 1.0;
    }
    if (const auto& h = core_->host_hooks(); h.on_message) {
        bool keep = true;
        if (!core_->run_hook([&] { keep = h.on_message(*this, m.to, m.payload); })) {
            answer(error_code::internal, "the host failed on this message");
            do_close(close_reason::host_error);
            return;
        }
        if (!keep) {
            answer(error_code::unknown_session, "dropped by the host");
            return;
        }
    }
    // msgs_in_ has one writer, this strand: a load and a store, no read-modify-write.
    msgs_in_.store(msgs_in_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    core_->stats().msgs_in.fetch_add(1, std::memory_order_relaxed);
    // Route latency, sampled (registry_stats::route_latency): two clock reads every 16th SEND.
    const bool sample = ++route_sample_ % registry_stats::route_sample_every == 0;
    const clock::time_point t0 = sample ? clock::now() : clock::time_point{};
    const auto err = core_->send(m.to, id_, m.payload, m.token);
    if (!err && !m.token.empty() && core_->is_remote(m.to)) {
        return;  // queued for another node: its owner's verdict comes as an ACK (deliver_ack)
    }
    if (sample) {
        core_->stats().route_latency.observe_ns(static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - t0).count()));
    }
    std::string why;
    if (err == error_code::queue_full) {
        why = "the target's queue is full";
    } else if (err == error_code::draining) {
        why = "the server is draining";
    } else if (err == error_code::node_unreachable) {
        why = "no link to the node of " + m.to.to_string();
    } else if (err) {
        why = "no live session " + m.to.to_string();
    }
    answer(err, why);
}

}  // namespace lariv::server
