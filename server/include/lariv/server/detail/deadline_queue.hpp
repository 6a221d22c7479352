// lariv/server/detail/deadline_queue.hpp — the deadlines of many sessions on one timer.
//
// A session has one deadline running at a time: the earliest of its handshake, frame, write, idle,
// heartbeat or closing-linger deadlines (session.cpp, "deadlines"). With an asio::steady_timer per
// session, every idle session paid for a timer object (120 B: its executor is a 56-byte
// any_io_executor), a pending wait operation (about 120 B, plus a heap copy of the strand for
// each) and asio's timer-queue entry: 450-500 B of a 2.3 KB idle session. Here a session pays for
// one heap entry (24 B) and a position (4 B); one steady_timer per execution context is armed for
// the earliest deadline of all.
//
// Costs and threads. schedule() and cancel() are O(log n) under one mutex per execution context.
// They run when a deadline starts or moves earlier (a session's start, its HELLO, the first
// partial frame or write of a deadline period, a close) and when one fires, never per message,
// so the mutex is not on the routing path (server/DESIGN.md, "What each thread writes"). With
// io_model = per_thread each io_context has its own queue and its own mutex.
//
// Lifetime. An entry holds a strong reference to its object, as a pending timer wait did: a
// session with a deadline running stays alive until it fires or is cancelled (a closing session's
// linger must run even if nothing else holds it). The queue is an Asio service: it lives as long
// as its execution context, and its shutdown() drops every entry (without firing it), as the
// context drops pending handlers.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/execution_context.hpp>
#include <asio/steady_timer.hpp>

namespace lariv::server::detail {

class deadline_queue;

/// What a deadline_queue schedules: an object with at most one deadline at a time.
class timed {
public:
    timed() = default;
    timed(const timed&) = delete;
    timed& operator=(const timed&) = delete;

protected:
    ~timed() = default;

private:
    friend class deadline_queue;
    /// The deadline came. Runs on a thread running the queue's context, outside the queue's
    /// lock, with the queue's reference to *this (move it into a handler; never block here).
    virtual void deadline_due(std::shared_ptr<timed> self) = 0;

    static constexpr std::uint32_t npos = std::numeric_limits<std::uint32_t>::max();
    std::uint32_t pos_ = npos;  // under the queue's mutex: the entry's index in its heap, or npos
};

/// One binary min-heap of deadlines and one timer per execution context (an Asio service).
class deadline_queue final : public asio::execution_context::service {
public:
    using clock = std::chrono::steady_clock;
    static inline asio::execution_context::id id;
    /// Deadlines fire at most this late (never early): the timer is armed for the end of the
    /// slot the earliest deadline falls in, so deadlines due close together share one wake-up.
    static constexpr std::chrono::milliseconds resolution{4};

    explicit deadline_queue(asio::execution_context& ctx);
    ~deadline_queue() override;

    /// The queue of `ex`'s execution context, created on first use; its timer runs on `ex`'s
    /// context.
    static deadline_queue& of(const asio::any_io_executor& ex);

    /// `t` is due at `due`, replacing its deadline if it has one. Holds a reference to `t` until
    /// the deadline fires or is cancelled. After the context's shutdown it does nothing.
    /// Thread-safe.
    void schedule(const std::shared_ptr<timed>& t, clock::time_point due);
    /// `t` has no deadline (nothing happens if it had none). Thread-safe.
    void cancel(timed& t);
    /// Deadlines waiting. Thread-safe.
    [[nodiscard]] std::size_t size() const;
    /// The steady_timer's expiry (max: not armed). Thread-safe; for tests.
    [[nodiscard]] clock::time_point armed_for() const;

private:
    struct entry {
        clock::time_point due;
        std::shared_ptr<timed> t;
    };

    void shutdown() override;
    void bind(const asio::any_io_executor& ex);
    void on_timer(std::error_code ec);
    void arm(clock::time_point due);  // mu_ held
    void place(std::size_t i, entry e);  // mu_ held: heap_[i] = e, with its position written
    void sift_up(std::size_t i);      // mu_ held
    void sift_down(std::size_t i);    // mu_ held
    std::shared_ptr<timed> take(std::size_t i);  // mu_ held: removes entry i, returns its reference

    mutable std::mutex mu_;
    std::vector<entry> heap_;                  // heap_[0] is the earliest
    std::optional<asio::steady_timer> timer_;  // made by the first of(); dropped at shutdown
    clock::time_point timer_at_ = clock::time_point::max();  // timer_'s expiry; max: no wait
    bool shut_ = false;
};

}  // namespace lariv::server::detail
