// The deadline queue (detail/deadline_queue.hpp): a binary min-heap whose entries know their
// position, so that moving or cancelling a deadline is O(log n), and one steady_timer armed for
// the heap's top.
#include "lariv/server/detail/deadline_queue.hpp"

#include <utility>

#include <asio/error.hpp>
#include <asio/execution/context.hpp>
#include <asio/query.hpp>

namespace lariv::server::detail {

namespace {
/// The timer's expiry, rounded up to a multiple of deadline_queue::resolution: deadlines due
/// within one slot fire in one wake-up (10,000 idle sessions with 15 s heartbeats are ~670
/// deadlines a second), each at most one resolution late, never early.
deadline_queue::clock::time_point slot_end(deadline_queue::clock::time_point due) {
    using clock = deadline_queue::clock;
    if (due == clock::time_point::max()) {
        return due;
    }
    const auto r = std::chrono::duration_cast<clock::duration>(deadline_queue::resolution).count();
    const auto t = due.time_since_epoch().count();
    const auto rem = t % r;
    return clock::time_point(clock::duration(rem == 0 ? t : t + (r - rem)));
}
}  // namespace

deadline_queue::deadline_queue(asio::execution_context& ctx) : asio::execution_context::service(ctx) {}

deadline_queue::~deadline_queue() = default;

deadline_queue& deadline_queue::of(const asio::any_io_executor& ex) {
    asio::execution_context& ctx = asio::query(ex, asio::execution::context);
    if (!asio::has_service<deadline_queue>(ctx)) {
        // Services are shut down and destroyed in the reverse order of their creation: make
        // sure the timer's own service exists before this one, so that it outlives timer_.
        asio::steady_timer make_timer_service(ex);
    }
    auto& q = asio::use_service<deadline_queue>(ctx);
    q.bind(ex);
    return q;
}

void deadline_queue::bind(const asio::any_io_executor& ex) {
    std::lock_guard lk(mu_);
    if (!timer_ && !shut_) {
        timer_.emplace(ex);
    }
}

void deadline_queue::shutdown() {
    // The context is going away: drop every entry without firing it (as it drops pending
    // handlers), outside the lock, since dropping the last reference to a session destroys it.
    std::vector<entry> dropped;
    {
        std::lock_guard lk(mu_);
        shut_ = true;
        for (auto& e : heap_) {
            e.t->pos_ = timed::npos;
        }
        dropped.swap(heap_);
        timer_.reset();  // its wait is cancelled; the context destroys the handler uninvoked
        timer_at_ = clock::time_point::max();
    }
}

void deadline_queue::schedule(const std::shared_ptr<timed>& t, clock::time_point due) {
    std::lock_guard lk(mu_);
    if (shut_ || !timer_) {
        return;
    }
    if (t->pos_ == timed::npos) {
        heap_.push_back({due, t});
        t->pos_ = static_cast<std::uint32_t>(heap_.size() - 1);
        sift_up(heap_.size() - 1);
    } else {
        const std::size_t i = t->pos_;
        const clock::time_point was = heap_[i].due;
        heap_[i].due = due;
        if (due < was) {
            sift_up(i);
        } else {
            sift_down(i);
        }
    }
    // A top that moved later leaves the timer early: it fires, finds nothing due, re-arms.
    if (slot_end(heap_.front().due) < timer_at_) {
        arm(heap_.front().due);
    }
}

void deadline_queue::cancel(timed& t) {
    std::shared_ptr<timed> dropped;  // released after the lock (it may be the last reference)
    std::lock_guard lk(mu_);
    if (t.pos_ != timed::npos) {
        dropped = take(t.pos_);
    }
}

std::size_t deadline_queue::size() const {
    std::lock_guard lk(mu_);
    return heap_.size();
}

deadline_queue::clock::time_point deadline_queue::armed_for() const {
    std::lock_guard lk(mu_);
    return timer_at_;
}

void deadline_queue::arm(clock::time_point due) {
    timer_at_ = slot_end(due);
    // expires_at cancels the wait armed before (its handler sees operation_aborted). A handler
    // that had already completed when it was cancelled still runs without an error: on_timer
    // takes whatever is due then and re-arms, so at most two waits are ever outstanding.
    timer_->expires_at(timer_at_);
    timer_->async_wait([this](std::error_code ec) { on_timer(ec); });
}

void deadline_queue::on_timer(std::error_code ec) {
    if (ec == asio::error::operation_aborted) {
        return;  // replaced by a wait for an earlier deadline, or the context shut down
    }
    std::vector<std::shared_ptr<timed>> due;
    {
        std::lock_guard lk(mu_);
        if (shut_) {
            return;
        }
        timer_at_ = clock::time_point::max();
        const auto now = clock::now();
        while (!heap_.empty() && heap_.front().due <= now) {
            due.push_back(take(0));
        }
        if (!heap_.empty()) {
            arm(heap_.front().due);
        }
    }
    for (auto& t : due) {
        timed* p = t.get();
        p->deadline_due(std::move(t));
    }
}

void deadline_queue::place(std::size_t i, entry e) {
    e.t->pos_ = static_cast<std::uint32_t>(i);
    heap_[i] = std::move(e);
}

void deadline_queue::sift_up(std::size_t i) {
    entry e = std::move(heap_[i]);
    while (i > 0) {
        const std::size_t parent = (i - 1) / 2;
        if (!(e.due < heap_[parent].due)) {
            break;
        }
        place(i, std::move(heap_[parent]));
        i = parent;
    }
    place(i, std::move(e));
}

void deadline_queue::sift_down(std::size_t i) {
    entry e = std::move(heap_[i]);
    const std::size_t n = heap_.size();
    for (;;) {
        std::size_t child = 2 * i + 1;
        if (child >= n) {
            break;
        }
        if (child + 1 < n && heap_[child + 1].due < heap_[child].due) {
            ++child;
        }
        if (!(heap_[child].due < e.due)) {
            break;
        }
        place(i, std::move(heap_[child]));
        i = child;
    }
    place(i, std::move(e));
}

std::shared_ptr<timed> deadline_queue::take(std::size_t i) {
    std::shared_ptr<timed> t = std::move(heap_[i].t);
    t->pos_ = timed::npos;
    const std::size_t last = heap_.size() - 1;
    if (i != last) {
        const clock::time_point was = heap_[i].due;
        heap_[i] = std::move(heap_[last]);
        heap_.pop_back();
        heap_[i].t->pos_ = static_cast<std::uint32_t>(i);
        if (heap_[i].due < was) {
            sift_up(i);
        } else {
            sift_down(i);
        }
    } else {
        heap_.pop_back();
    }
    return t;
}

}  // namespace lariv::server::detail
